"""The circuit breaker: stop calling a dependency that is failing, try it again later.

A breaker is CLOSED while the dependency is healthy: calls run concurrently (no lock is
held while they run) and their outcomes feed a judging window (see
:mod:`safeship.resilience.windows`). When the window's thresholds are reached it OPENS:
calls are rejected at once with a fresh :class:`~safeship.resilience.BreakerOpen` (or
answered by ``fallback=``) for ``open_duration`` seconds, optionally growing each time
the breaker reopens. Then it turns HALF_OPEN and admits exactly ``half_open_calls`` trial
calls, however many threads or tasks arrive at once; their outcomes close it or open it
again. Manual states (forced open, disabled, metrics-only) override all of this until
:meth:`Breaker.reset`.

Which outcomes count: an exception that is an instance of ``ignore`` (or a policy's own
:class:`~safeship.resilience.Rejected`, or a ``BaseException`` such as cancellation) is
ignored; one that is an instance of ``record`` is a failure; any other exception means
the dependency answered, so it counts as a success. ``failure_result`` marks returned
values as failures (say, HTTP 5xx responses). With ``slow_call_duration`` set, calls that
take at least that long are also counted as slow.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from safeship.resilience import registry
from safeship.resilience._breaker_support import (
    check_durations,
    check_name,
    check_positive_int,
    check_seconds,
    check_types,
    gate_allows,
    install_metrics,
    log_transition,
    read_count,
    threshold_reason,
)
from safeship.resilience._hooks import run_hook
from safeship.resilience._log import logger
from safeship.resilience._policy import Guard, GuardedPolicy
from safeship.resilience.breaker_types import BreakerSnapshot, State, Transition
from safeship.resilience.clock import SYSTEM_CLOCK, Clock
from safeship.resilience.errors import BreakerOpen, Rejected
from safeship.resilience.windows import (
    FAILURE,
    SLOW,
    SUCCESS,
    ConsecutiveFailures,
    WindowSpec,
    WindowState,
)

__all__ = ["Breaker", "Listener"]

P = ParamSpec("P")
R = TypeVar("R")
Listener = Callable[[Transition], None]
ExceptionTypes = tuple[type[BaseException], ...]

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN
_FORCED_OPEN = State.FORCED_OPEN
_DISABLED = State.DISABLED
_METRICS_ONLY = State.METRICS_ONLY
_RUNNING = (_CLOSED, _DISABLED, _METRICS_ONLY)
_NO_FALLBACK: Any = object()
_NO_RESULT: Any = object()  # a block or an unrecorded exception: nothing to judge
_REJECTED = -1
_HISTORY = 20
_GATE_RECHECK = 0.5
_OUTCOMES = ("success", "failure", "slow_success", "slow_failure")


class Breaker(GuardedPolicy):
    """A circuit breaker; use as ``@breaker``, ``breaker.call(fn)`` or ``with breaker:``.

    All settings are keyword-only and checked here, so a bad one fails at start-up. The
    defaults follow what services commonly hand-write: open after 5 consecutive failures,
    stay open 60 s, close after 2 successful trial calls.
    """

    __slots__ = (
        "__weakref__",
        "_counts",
        "_failure_result",
        "_fallback",
        "_gate",
        "_generation",
        "_history",
        "_ignore",
        "_ignored",
        "_listeners",
        "_lock",
        "_max_open",
        "_multiplier",
        "_now",
        "_open_duration",
        "_open_until",
        "_opens",
        "_record",
        "_rejections",
        "_slow",
        "_state",
        "_transitions",
        "_trial_done",
        "_trial_fails",
        "_trial_limits",
        "_trial_slows",
        "_trials",
        "_trials_left",
        "_window",
        "_window_spec",
        "clock",
        "name",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        window: WindowSpec | None = None,
        open_duration: float = 60.0,
        open_duration_multiplier: float = 1.0,
        max_open_duration: float | None = None,
        half_open_calls: int = 2,
        slow_call_duration: float | None = None,
        record: ExceptionTypes = (Exception,),
        ignore: ExceptionTypes = (),
        failure_result: Callable[[Any], bool] | None = None,
        fallback: Any = _NO_FALLBACK,
        listeners: Iterable[Listener] = (),
        clock: Clock | None = None,
        register: bool = True,
    ) -> None:
        self.name = check_name(name)
        spec = window if window is not None else ConsecutiveFailures()
        check_durations(open_duration, open_duration_multiplier, max_open_duration)
        check_positive_int("half_open_calls", half_open_calls, 10_000)
        if slow_call_duration is not None:
            check_seconds("slow_call_duration", slow_call_duration)
        self._record = check_types("record", record)
        self._ignore = (*check_types("ignore", ignore), Rejected)
        if failure_result is not None and not callable(failure_result):
            raise TypeError(f"Breaker.failure_result must be callable, got {failure_result!r}")
        self._configure(spec, open_duration, open_duration_multiplier, max_open_duration)
        self._trials = half_open_calls
        self._trial_limits = spec.trial_limits(half_open_calls)
        self._slow = slow_call_duration
        self._failure_result = failure_result
        self._fallback = fallback
        self._listeners: tuple[Listener, ...] = tuple(listeners)
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self._now = self.clock.monotonic
        self._start_state()
        if register:
            registry.register(self)
            install_metrics()

    def _configure(self, spec: WindowSpec, duration: float, mult: float, cap: float | None) -> None:
        self._window_spec = spec
        self._open_duration = float(duration)
        self._multiplier = float(mult)
        self._max_open = float(cap) if cap is not None else None

    def _start_state(self) -> None:
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._generation = 0
        self._window: WindowState = self._window_spec.new_state()
        self._open_until = 0.0
        self._opens = 0
        self._trials_left = self._trial_done = self._trial_fails = self._trial_slows = 0
        self._counts = [0, 0, 0, 0]
        self._ignored = 0
        self._rejections = itertools.count()
        self._transitions: Counter[tuple[State, State]] = Counter()
        self._history: deque[Transition] = deque(maxlen=_HISTORY)
        self._gate: Callable[[], bool] | None = None

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self._state.value}>"

    @property
    def state(self) -> State:
        """The current state (an open breaker whose time is up still reads OPEN)."""
        return self._state

    # -- admission ---------------------------------------------------------------------

    def allow(self) -> int:
        """Ask to make one call: return a permit, or raise :class:`BreakerOpen`.

        Pass the permit to :meth:`record_success`, :meth:`record_failure` or
        :meth:`record_exception` when the call ends. The decorator does all of this.
        """
        generation = self._generation
        if self._state is _CLOSED:
            return generation
        permit = self._admit()
        if isinstance(permit, BreakerOpen):
            raise permit
        return permit

    def _admit(self) -> int | BreakerOpen:
        """A permit, or the rejection to raise (returned, so it is raised one frame up)."""
        state = self._state
        if state is _OPEN:
            now = self._now()
            if now < self._open_until:
                next(self._rejections)
                return BreakerOpen(self.name, self._open_until - now)
        elif state is _FORCED_OPEN:
            next(self._rejections)
            return BreakerOpen(self.name, None)
        return self._admit_locked()

    def _admit_locked(self) -> int | BreakerOpen:
        event = None
        with self._lock:
            permit = self._generation
            state = self._state
            if state is _OPEN:
                event = self._maybe_half_open_locked()
                state = self._state
                permit = self._generation
            if state is _HALF_OPEN:
                if self._trials_left > 0:
                    self._trials_left -= 1
                else:
                    permit = _REJECTED
            elif state not in _RUNNING:
                permit = _REJECTED
        if event is not None:
            self._emit(event)
        if permit != _REJECTED:
            return permit
        next(self._rejections)
        remaining = self.open_remaining()
        return BreakerOpen(self.name, remaining)

    def _maybe_half_open_locked(self) -> Transition | None:
        now = self._now()
        if now < self._open_until:
            return None
        gate = self._gate
        if gate is not None and not gate_allows(gate):
            self._open_until = now + min(_GATE_RECHECK, self._open_duration)
            return None
        return self._move_locked(_HALF_OPEN, "open duration elapsed")

    # -- recording ---------------------------------------------------------------------

    def record_success(self, permit: int, started: float = 0.0, result: Any = _NO_RESULT) -> None:
        """Record a call that returned ``result`` (checked by ``failure_result``).

        Without ``result`` (a guarded block, an unrecorded exception) the predicate is not
        asked. A predicate that raises makes the call a failure (logged as
        ``resilience.hook_failed``); one that raises a ``BaseException`` gives the permit
        back before the exception goes on.
        """
        end = self._now()
        outcome = SUCCESS
        if self._slow is not None and end - started >= self._slow:
            outcome = SLOW
        predicate = self._failure_result
        if predicate is not None and result is not _NO_RESULT:
            try:
                failed = run_hook(self.name, "failure_result", predicate, True, result)
            except BaseException:
                self.release(permit)
                raise
            if failed:
                outcome |= FAILURE
        self._record_outcome(permit, end, outcome)

    def record_failure(self, permit: int, started: float = 0.0) -> None:
        """Record a failed call."""
        end = self._now()
        slow = self._slow is not None and end - started >= self._slow
        self._record_outcome(permit, end, FAILURE | SLOW if slow else FAILURE)

    def record_exception(self, permit: int, started: float, exc: BaseException) -> bool:
        """Classify ``exc`` and record it; return True when it counted as a failure."""
        if isinstance(exc, self._ignore) or not isinstance(exc, Exception):
            self.release(permit)
            return False
        if isinstance(exc, self._record):
            self.record_failure(permit, started)
            return True
        self.record_success(permit, started)
        return False

    def release(self, permit: int) -> None:
        """Give back a permit whose call must not count (ignored or cancelled)."""
        with self._lock:
            self._ignored += 1
            if permit == self._generation and self._state is _HALF_OPEN:
                self._trials_left += 1

    def _record_outcome(self, permit: int, end: float, outcome: int) -> None:
        with self._lock:
            event = self._record_locked(permit, end, outcome)
        if event is not None:
            self._emit(event)

    def _record_locked(self, permit: int, end: float, outcome: int) -> Transition | None:
        self._counts[outcome] += 1
        if permit != self._generation:
            return None  # admitted under an earlier state: stale, not judged
        state = self._state
        if state is _CLOSED:
            if self._window.record(end, outcome):
                return self._open_locked(end, self._reason_locked(end))
        elif state is _HALF_OPEN:
            return self._trial_locked(end, outcome)
        elif state is _METRICS_ONLY:
            self._window.record(end, outcome)
        return None

    def _trip(self, permit: int, end: float) -> None:
        """Open after the inlined success path found the window past its thresholds.

        ``end`` only dates the call for the window (count windows skip the clock and pass
        0.0); the open period is measured from the clock now.
        """
        now = self._now()
        with self._lock:
            if permit != self._generation or self._state is not _CLOSED:
                return
            event = self._open_locked(now, self._reason_locked(now))
        self._emit(event)

    def _reason_locked(self, now: float) -> str:
        return threshold_reason(self._window_spec, self._window, now)

    def _trial_locked(self, now: float, outcome: int) -> Transition | None:
        self._trial_done += 1
        self._trial_fails += outcome & FAILURE
        self._trial_slows += outcome >> 1
        fail_limit, slow_limit = self._trial_limits
        if self._trial_fails >= fail_limit or self._trial_slows >= slow_limit:
            return self._open_locked(now, "trial calls failed")
        if self._trial_done >= self._trials:
            return self._move_locked(_CLOSED, "trial calls succeeded")
        return None

    # -- transitions -------------------------------------------------------------------

    def _open_locked(self, now: float, reason: str) -> Transition:
        self._opens += 1
        self._open_until = now + self._current_open_duration()
        return self._move_locked(_OPEN, reason)

    def _current_open_duration(self) -> float:
        duration = self._open_duration * self._multiplier ** (self._opens - 1)
        return duration if self._max_open is None else min(duration, self._max_open)

    def _move_locked(self, new: State, reason: str) -> Transition:
        old = self._state
        if new is _CLOSED or new is _METRICS_ONLY:
            self._window = self._window_spec.new_state()
        if new is _CLOSED:
            self._opens = 0
        if new is _HALF_OPEN:
            self._trials_left = self._trials
            self._trial_done = self._trial_fails = self._trial_slows = 0
        self._generation += 1  # before the state: see allow()
        self._state = new
        event = Transition(self.name, old, new, self.clock.time(), reason)
        self._history.append(event)
        self._transitions[(old, new)] += 1
        return event

    def _emit(self, event: Transition) -> None:
        log_transition(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a faulty listener must never fail the call
                logger.exception(
                    "resilience.breaker.listener_failed",
                    extra={"breaker": self.name, "listener": repr(listener)},
                )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(transition)`` after every state change (outside the lock)."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners = tuple(item for item in self._listeners if item is not listener)

    # -- manual control ----------------------------------------------------------------

    def force_open(self, *, reason: str = "manual") -> None:
        """Reject every call until :meth:`reset` (or another manual state)."""
        self._set_manual(_FORCED_OPEN, reason)

    def disable(self, *, reason: str = "manual") -> None:
        """Let every call through and record nothing until :meth:`reset`."""
        self._set_manual(_DISABLED, reason)

    def metrics_only(self, *, reason: str = "manual") -> None:
        """Let every call through and keep recording, but never open, until :meth:`reset`."""
        self._set_manual(_METRICS_ONLY, reason)

    def reset(self, *, reason: str = "reset") -> None:
        """Return to CLOSED with an empty window and the base open duration."""
        self._set_manual(_CLOSED, reason)

    def _set_manual(self, state: State, reason: str) -> None:
        with self._lock:
            event = self._move_locked(state, reason)
        self._emit(event)

    def open_for(self, seconds: float, *, reason: str) -> bool:
        """Open now for ``seconds`` unless open or in a manual state; True if it opened.

        Used by shared state (:mod:`safeship.resilience.redis_shared`) when another
        process opened the breaker for the same dependency.
        """
        with self._lock:
            if self._state is not _CLOSED and self._state is not _HALF_OPEN:
                return False
            self._opens += 1
            self._open_until = self._now() + max(0.0, seconds)
            event = self._move_locked(_OPEN, reason)
        self._emit(event)
        return True

    def close_if_open(self, *, reason: str) -> bool:
        """Close an OPEN or HALF_OPEN breaker (a peer's trial succeeded); True if it closed."""
        with self._lock:
            if self._state is not _OPEN and self._state is not _HALF_OPEN:
                return False
            event = self._move_locked(_CLOSED, reason)
        self._emit(event)
        return True

    def set_half_open_gate(self, gate: Callable[[], bool] | None) -> None:
        """Consult ``gate()`` before turning HALF_OPEN; False keeps the breaker open."""
        self._gate = gate

    # -- reading -----------------------------------------------------------------------

    @property
    def open_duration(self) -> float:
        """The base open duration in seconds (before any growth)."""
        return self._open_duration

    def open_remaining(self) -> float | None:
        """Seconds until an OPEN breaker admits trial calls (0 when due), else None."""
        if self._state is not _OPEN:
            return None
        return max(0.0, self._open_until - self._now())

    @property
    def window(self) -> WindowSpec:
        """The judging window's configuration."""
        return self._window_spec

    def counts(self) -> dict[str, int]:
        """Calls since creation by outcome, plus ``ignored`` and ``rejected``."""
        with self._lock:
            totals = dict(zip(_OUTCOMES, self._counts, strict=True))
            totals["ignored"] = self._ignored
        totals["rejected"] = read_count(self._rejections)
        return totals

    def transition_counts(self) -> dict[tuple[State, State], int]:
        """How many times each (from, to) transition happened since creation."""
        with self._lock:
            return dict(self._transitions)

    def snapshot(self) -> BreakerSnapshot:
        """A JSON-able picture: state, window figures, trial figures, recent transitions."""
        from safeship.resilience._snapshot import take_snapshot

        return take_snapshot(self)

    def _snapshot_parts(self) -> tuple[State, tuple[int, int, int], list[int], float, list[Any]]:
        with self._lock:
            now = self._now()
            figures = self._window.figures(now)
            trial = [self._trials, self._trials - self._trials_left, self._trial_done]
            trial.append(self._trial_fails)
            return self._state, figures, trial, self._open_until - now, list(self._history)

    # -- wrapping ----------------------------------------------------------------------

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Guard a plain function."""
        from safeship.resilience._breaker_calls import wrap_sync

        return wrap_sync(self, fn, self._fallback)

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Guard a coroutine function."""
        from safeship.resilience._breaker_calls import wrap_async

        return wrap_async(self, fn, self._fallback)

    def guard(self) -> Guard:
        """A single-use context manager: ``with breaker.guard(): ...``."""
        return _BreakerGuard(self)


class _BreakerGuard:
    __slots__ = ("breaker", "permit", "started")

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.permit = _REJECTED
        self.started = 0.0

    def __enter__(self) -> None:
        self.permit = self.breaker.allow()
        self.started = self.breaker._now()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            self.breaker.record_success(self.permit, self.started)
        else:
            self.breaker.record_exception(self.permit, self.started, ev)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)
