"""The circuit breaker's state machine: no I/O, no logging, no listeners, time injected.

:class:`BreakerCore` answers two questions. :meth:`~BreakerCore.admit` — may a call run?
— gives a *permit* (the generation of the state the call was admitted under) or the
:class:`~safeship.resilience.BreakerOpen` rejection to raise. :meth:`~BreakerCore.record`
— a call admitted with this permit ended with this outcome — updates the judging window
or the half-open trials and returns the :class:`Transition` it caused, if any. Manual
moves return their transition too. The caller (the :class:`~safeship.resilience.Breaker`
facade and its call drivers) tells listeners; the core never calls out, except to the
half-open gate, whose failure it contains.

Thread safety: every change happens under one lock held for a few field updates, never
while a call runs. :attr:`ticket` is the one field read without the lock: the current
generation while calls run freely (CLOSED, DISABLED, METRICS_ONLY), else ``-1``, so a
driver admits a call in those states with one attribute read. A permit from a former
generation is stale: its outcome is counted in the totals but judged by nothing.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable

from safeship._counting import read_count
from safeship.resilience._breaker_support import gate_allows, threshold_reason
from safeship.resilience._breaker_types import State, Transition
from safeship.resilience._clock import Clock
from safeship.resilience._errors import BreakerOpen
from safeship.resilience._windows import FAILURE, WindowSpec, WindowState

__all__ = ["REJECTED", "BreakerCore", "CoreFigures", "OpenPolicy"]

REJECTED = -1
_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN
_FORCED_OPEN = State.FORCED_OPEN
_RUNNING = frozenset({State.CLOSED, State.DISABLED, State.METRICS_ONLY})
_RECORDED = frozenset({State.CLOSED, State.METRICS_ONLY})
_HISTORY = 20
_GATE_RECHECK = 0.5
_OUTCOMES = ("success", "failure", "slow_success", "slow_failure")

CoreFigures = tuple[State, tuple[int, int, int], list[int], float, list[Transition]]
"""(state, window figures, [permitted, admitted, completed, failed] trials, seconds
until an open breaker admits trials, recent transitions)."""


class OpenPolicy:
    """How long the breaker stays open: a base duration, growing while trials fail."""

    __slots__ = ("cap", "duration", "multiplier")

    def __init__(self, duration: float, multiplier: float, cap: float | None) -> None:
        self.duration = float(duration)
        self.multiplier = float(multiplier)
        self.cap = None if cap is None else float(cap)

    def after(self, opens: int) -> float:
        """Seconds to stay open after the ``opens``-th opening in a row (1 is the first)."""
        seconds = self.duration * self.multiplier ** (opens - 1)
        return seconds if self.cap is None else min(seconds, self.cap)


class BreakerCore:
    """One breaker's state, window and counters; see the module docs."""

    __slots__ = (
        "_counts",
        "_history",
        "_ignored",
        "_lock",
        "_now",
        "_open_until",
        "_opens",
        "_rejections",
        "_transitions",
        "_trial_done",
        "_trial_fails",
        "_trial_limits",
        "_trial_slows",
        "_trials",
        "_trials_left",
        "_window",
        "clock",
        "gate",
        "generation",
        "name",
        "opening",
        "spec",
        "state",
        "ticket",
    )

    def __init__(
        self, name: str, spec: WindowSpec, opening: OpenPolicy, trials: int, clock: Clock
    ) -> None:
        self.name = name
        self.clock = clock
        self.opening = opening
        self.gate: Callable[[], bool] | None = None
        self._now = clock.monotonic
        self.spec = spec
        self._trials = trials
        self._trial_limits = spec.trial_limits(trials)
        self._lock = threading.Lock()
        self.state = _CLOSED
        self.generation = self.ticket = 0
        self._window: WindowState = spec.new_state()
        self._open_until = 0.0
        self._opens = 0
        self._trials_left = self._trial_done = self._trial_fails = self._trial_slows = 0
        self._counts = [0, 0, 0, 0]
        self._ignored = 0
        self._rejections = itertools.count()
        self._transitions: Counter[tuple[State, State]] = Counter()
        self._history: deque[Transition] = deque(maxlen=_HISTORY)

    # -- admission ---------------------------------------------------------------------

    def admit(self) -> tuple[int | BreakerOpen, Transition | None]:
        """A permit or the rejection to raise, and the transition admitting caused."""
        ticket = self.ticket
        if ticket >= 0:
            return ticket, None
        state = self.state
        if state is _OPEN:
            now = self._now()
            if now < self._open_until:
                next(self._rejections)
                return BreakerOpen(self.name, self._open_until - now), None
        elif state is _FORCED_OPEN:
            next(self._rejections)
            return BreakerOpen(self.name, None), None
        return self._admit_locked()

    def _admit_locked(self) -> tuple[int | BreakerOpen, Transition | None]:
        event = None
        with self._lock:
            if self.state is _OPEN:
                event = self._maybe_half_open_locked()
            permit = self.generation
            state = self.state
            if state is _HALF_OPEN and self._trials_left > 0:
                self._trials_left -= 1
            elif state not in _RUNNING:
                permit = REJECTED
        if permit != REJECTED:
            return permit, event
        next(self._rejections)
        return BreakerOpen(self.name, self.open_remaining()), event

    def _maybe_half_open_locked(self) -> Transition | None:
        now = self._now()
        if now < self._open_until:
            return None
        gate = self.gate
        if gate is not None and not gate_allows(gate):
            self._open_until = now + min(_GATE_RECHECK, self.opening.duration)
            return None
        return self._move_locked(_HALF_OPEN, "open duration elapsed")

    # -- recording ---------------------------------------------------------------------

    def record(self, permit: int, now: float, outcome: int) -> Transition | None:
        """Judge one finished call (``outcome``: SUCCESS, FAILURE, SLOW bits) at ``now``.

        ``now`` dates the call for a time window (others ignore it: callers may pass 0.0);
        an opening is timed from the clock. The lock is taken by hand, not with ``with``:
        on this path, once per call, that is a third cheaper.
        """
        lock = self._lock
        lock.acquire()
        try:
            self._counts[outcome] += 1
            if permit != self.generation:
                return None  # admitted under an earlier state: stale, not judged
            if self.state is _CLOSED:
                if self._window.record(now, outcome):
                    return self._open_locked(self._now(), None)
                return None
            return self._judge_other_locked(now, outcome)
        finally:
            lock.release()

    def _judge_other_locked(self, now: float, outcome: int) -> Transition | None:
        if self.state is _HALF_OPEN:
            return self._trial_locked(outcome)
        if self.state is State.METRICS_ONLY:
            self._window.record(now, outcome)
        return None

    def release(self, permit: int) -> None:
        """Give back a permit whose call must not count (ignored or cancelled)."""
        lock = self._lock
        lock.acquire()
        try:
            self._ignored += 1
            if permit == self.generation and self.state is _HALF_OPEN:
                self._trials_left += 1
        finally:
            lock.release()

    def _trial_locked(self, outcome: int) -> Transition | None:
        self._trial_done += 1
        self._trial_fails += outcome & FAILURE
        self._trial_slows += outcome >> 1
        fail_limit, slow_limit = self._trial_limits
        if self._trial_fails >= fail_limit or self._trial_slows >= slow_limit:
            return self._open_locked(self._now(), "trial calls failed")
        if self._trial_done >= self._trials:
            return self._move_locked(_CLOSED, "trial calls succeeded")
        return None

    # -- transitions -------------------------------------------------------------------

    def _open_locked(
        self, now: float, reason: str | None, seconds: float | None = None
    ) -> Transition:
        self._opens += 1
        if reason is None:
            reason = threshold_reason(self.spec, self._window, now)
        if seconds is None:
            seconds = self.opening.after(self._opens)
        self._open_until = now + seconds
        return self._move_locked(_OPEN, reason)

    def _move_locked(self, new: State, reason: str) -> Transition:
        old = self.state
        if new in _RECORDED:
            self._window = self.spec.new_state()
        if new is _CLOSED:
            self._opens = 0
        if new is _HALF_OPEN:
            self._trials_left = self._trials
            self._trial_done = self._trial_fails = self._trial_slows = 0
        self.generation += 1
        self.state = new
        self.ticket = self.generation if new in _RUNNING else REJECTED
        event = Transition(self.name, old, new, self.clock.time(), reason)
        self._history.append(event)
        self._transitions[(old, new)] += 1
        return event

    def move(self, state: State, reason: str) -> Transition:
        """A manual move (force open, disable, metrics only, reset to CLOSED)."""
        with self._lock:
            return self._move_locked(state, reason)

    def open_for(self, seconds: float, reason: str) -> Transition | None:
        """Open for ``seconds`` unless OPEN already or in a manual state."""
        with self._lock:
            if self.state is not _CLOSED and self.state is not _HALF_OPEN:
                return None
            return self._open_locked(self._now(), reason, max(0.0, seconds))

    def close_if_open(self, reason: str) -> Transition | None:
        """Close an OPEN or HALF_OPEN breaker; None when it was neither."""
        with self._lock:
            if self.state is not _OPEN and self.state is not _HALF_OPEN:
                return None
            return self._move_locked(_CLOSED, reason)

    # -- reading -----------------------------------------------------------------------

    def open_remaining(self) -> float | None:
        """Seconds until an OPEN breaker admits trial calls (0 when due), else None."""
        if self.state is not _OPEN:
            return None
        return max(0.0, self._open_until - self._now())

    def counts(self) -> dict[str, int]:
        """Calls by outcome since creation, plus ``ignored`` and ``rejected``."""
        with self._lock:
            totals = dict(zip(_OUTCOMES, self._counts, strict=True))
            totals["ignored"] = self._ignored
        totals["rejected"] = read_count(self._rejections)
        return totals

    def transition_counts(self) -> dict[tuple[State, State], int]:
        """How many times each (from, to) transition happened since creation."""
        with self._lock:
            return dict(self._transitions)

    def figures(self) -> CoreFigures:
        """Everything a snapshot shows, read under the lock at once."""
        with self._lock:
            now = self._now()
            window = self._window.figures(now)
            trial = [self._trials, self._trials - self._trials_left, self._trial_done]
            trial.append(self._trial_fails)
            return self.state, window, trial, self._open_until - now, list(self._history)
