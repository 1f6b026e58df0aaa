"""How a circuit breaker judges a dependency: the sliding windows (pure logic, no clock).

Three judging modes, chosen with ``Breaker(window=...)``:

* :class:`ConsecutiveFailures` — open after N failures in a row (any success resets the
  run). The simple mode most services hand-write; the default (N = 5).
* :class:`CountWindow` — judge the last N calls: open when, with at least
  ``minimum_calls`` recorded, the failure rate or the slow-call rate reaches its threshold.
* :class:`TimeWindow` — judge the calls of the last N seconds the same way. Calls are
  aggregated in one-second buckets (a ring of N buckets, oldest evicted as time moves on),
  so memory is O(N) whatever the traffic.

Rates compare exactly (integer parts per million), so a 70 % threshold opens at 7 of 10.
The same thresholds judge the half-open trial calls: the breaker reopens as soon as the
trials' failures (or slow calls) reach the threshold's share of the trials, and closes
once every trial finished below it. In consecutive mode any failed trial reopens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FAILURE",
    "SLOW",
    "SUCCESS",
    "ConsecutiveFailures",
    "CountWindow",
    "TimeWindow",
    "WindowSpec",
    "WindowState",
]

SUCCESS = 0
FAILURE = 1
SLOW = 2
_PPM = 1_000_000
_MAX_SECONDS = 3600
_MAX_CALLS = 1_000_000


def _check_int(owner: str, field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{owner}.{field} must be an int from {low} to {high}, got {value!r}")


def _check_rate(owner: str, field: str, value: object) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
    if not ok:
        raise ValueError(
            f"{owner}.{field} must be a fraction in (0, 1] (0.5 means 50 %), got {value!r}"
        )


def _ppm(rate: float) -> int:
    return round(rate * _PPM)


def _share_of(rate_ppm: int, trials: int) -> int:
    """Smallest count whose share of ``trials`` reaches ``rate_ppm`` (at least 1)."""
    return max(1, -(-rate_ppm * trials // _PPM))


class WindowState(Protocol):
    """The mutable recorder behind a window spec; the breaker guards it with its lock."""

    def record(self, now: float, outcome: int) -> bool:
        """Add one outcome at ``now``; return True when the thresholds are reached."""
        ...

    def figures(self, now: float) -> tuple[int, int, int]:
        """Return (calls, failures, slow calls) currently inside the window."""
        ...


class WindowSpec(Protocol):
    """A frozen window configuration that can build its recorder."""

    @property
    def kind(self) -> str:
        """``consecutive``, ``count`` or ``time``."""
        ...

    def new_state(self) -> WindowState:
        """A fresh, empty recorder."""
        ...

    def trial_limits(self, trials: int) -> tuple[int, int]:
        """(failures, slow calls) among ``trials`` half-open calls that reopen the breaker."""
        ...

    def judge(self, calls: int, failures: int, slow_calls: int) -> bool:
        """Whether these figures (e.g. fleet-wide ones) reach the thresholds."""
        ...


@dataclass(frozen=True, slots=True)
class ConsecutiveFailures:
    """Open after ``threshold`` failures in a row; a slow call counts as a failure."""

    threshold: int = 5

    def __post_init__(self) -> None:
        _check_int("ConsecutiveFailures", "threshold", self.threshold, 1, _MAX_CALLS)

    @property
    def kind(self) -> str:
        """``consecutive``, ``count`` or ``time``."""
        return "consecutive"

    def new_state(self) -> WindowState:
        """A fresh, empty recorder for this window."""
        return _ConsecutiveState(self.threshold)

    def trial_limits(self, trials: int) -> tuple[int, int]:
        """(failures, slow calls) among ``trials`` half-open calls that reopen."""
        return (1, 1)

    def judge(self, calls: int, failures: int, slow_calls: int) -> bool:
        """Whether these figures (say, fleet-wide ones) reach the thresholds."""
        return failures + slow_calls >= self.threshold and failures + slow_calls == calls


class _RateRules:
    """What count and time windows share: judging failure and slow-call rates."""

    __slots__ = ()
    failure_rate: float
    slow_call_rate: float

    def _minimum(self) -> int:
        raise NotImplementedError

    def trial_limits(self, trials: int) -> tuple[int, int]:
        """(failures, slow calls) among ``trials`` half-open calls that reopen."""
        return (
            _share_of(_ppm(self.failure_rate), trials),
            _share_of(_ppm(self.slow_call_rate), trials),
        )

    def judge(self, calls: int, failures: int, slow_calls: int) -> bool:
        """Whether these figures (say, fleet-wide ones) reach the thresholds."""
        return _judge(
            self._minimum(),
            _ppm(self.failure_rate),
            _ppm(self.slow_call_rate),
            calls,
            failures,
            slow_calls,
        )


@dataclass(frozen=True, slots=True)
class CountWindow(_RateRules):
    """Judge the last ``calls`` calls; ``minimum_calls`` defaults to the window size."""

    calls: int = 100
    minimum_calls: int | None = None
    failure_rate: float = 0.5
    slow_call_rate: float = 1.0

    def __post_init__(self) -> None:
        _check_int("CountWindow", "calls", self.calls, 1, _MAX_CALLS)
        if self.minimum_calls is not None:
            _check_int("CountWindow", "minimum_calls", self.minimum_calls, 1, self.calls)
        _check_rate("CountWindow", "failure_rate", self.failure_rate)
        _check_rate("CountWindow", "slow_call_rate", self.slow_call_rate)

    @property
    def kind(self) -> str:
        """``consecutive``, ``count`` or ``time``."""
        return "count"

    @property
    def effective_minimum(self) -> int:
        """The minimum number of calls before the window judges."""
        return self.calls if self.minimum_calls is None else self.minimum_calls

    def new_state(self) -> WindowState:
        """A fresh, empty recorder for this window."""
        return _CountState(self)

    def _minimum(self) -> int:
        return self.effective_minimum


@dataclass(frozen=True, slots=True)
class TimeWindow(_RateRules):
    """Judge the calls of the last ``seconds`` seconds (one-second buckets)."""

    seconds: int = 60
    minimum_calls: int = 10
    failure_rate: float = 0.5
    slow_call_rate: float = 1.0

    def __post_init__(self) -> None:
        _check_int("TimeWindow", "seconds", self.seconds, 1, _MAX_SECONDS)
        _check_int("TimeWindow", "minimum_calls", self.minimum_calls, 1, _MAX_CALLS)
        _check_rate("TimeWindow", "failure_rate", self.failure_rate)
        _check_rate("TimeWindow", "slow_call_rate", self.slow_call_rate)

    @property
    def kind(self) -> str:
        """``consecutive``, ``count`` or ``time``."""
        return "time"

    def new_state(self) -> WindowState:
        """A fresh, empty recorder for this window."""
        return _TimeState(self)

    def _minimum(self) -> int:
        return self.minimum_calls


def _judge(minimum: int, fail_ppm: int, slow_ppm: int, calls: int, fails: int, slows: int) -> bool:
    if calls < minimum:
        return False
    return fails * _PPM >= fail_ppm * calls or slows * _PPM >= slow_ppm * calls


class _ConsecutiveState:
    __slots__ = ("calls", "failures", "run", "slows", "threshold")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.run = 0
        self.calls = 0
        self.failures = 0
        self.slows = 0

    def record(self, now: float, outcome: int) -> bool:
        self.calls += 1
        if not outcome:
            self.run = 0
            return False
        self.failures += outcome & FAILURE
        self.slows += outcome >> 1
        self.run += 1
        return self.run >= self.threshold

    def figures(self, now: float) -> tuple[int, int, int]:
        return (self.calls, self.failures, self.slows)


class _CountState:
    __slots__ = ("calls", "fail_ppm", "failures", "minimum", "pos", "ring", "slow_ppm", "slows")

    def __init__(self, spec: CountWindow) -> None:
        self.ring = [-1] * spec.calls
        self.pos = 0
        self.calls = 0
        self.failures = 0
        self.slows = 0
        self.minimum = spec.effective_minimum
        self.fail_ppm = _ppm(spec.failure_rate)
        self.slow_ppm = _ppm(spec.slow_call_rate)

    def record(self, now: float, outcome: int) -> bool:
        ring = self.ring
        pos = self.pos
        old = ring[pos]
        ring[pos] = outcome
        pos += 1
        self.pos = 0 if pos == len(ring) else pos
        if old < 0:
            self.calls += 1
        elif old:
            self.failures -= old & FAILURE
            self.slows -= old >> 1
        if outcome:
            self.failures += outcome & FAILURE
            self.slows += outcome >> 1
        elif old >= 0 or self.calls != self.minimum:
            return False  # a success can only cross the threshold by reaching the minimum
        return _judge(
            self.minimum, self.fail_ppm, self.slow_ppm, self.calls, self.failures, self.slows
        )

    def figures(self, now: float) -> tuple[int, int, int]:
        return (self.calls, self.failures, self.slows)


class _TimeState:
    __slots__ = (
        "b_calls",
        "b_fails",
        "b_slows",
        "calls",
        "edge",
        "fail_ppm",
        "failures",
        "head",
        "index",
        "minimum",
        "rejudge",
        "size",
        "slow_ppm",
        "slows",
    )

    def __init__(self, spec: TimeWindow) -> None:
        self.size = spec.seconds
        self.b_calls = [0] * spec.seconds
        self.b_fails = [0] * spec.seconds
        self.b_slows = [0] * spec.seconds
        self.head = -(2**62)  # the second the head bucket covers
        self.edge = float(self.head + 1)  # where the head bucket ends
        self.index = 0
        self.rejudge = False
        self.calls = 0
        self.failures = 0
        self.slows = 0
        self.minimum = spec.minimum_calls
        self.fail_ppm = _ppm(spec.failure_rate)
        self.slow_ppm = _ppm(spec.slow_call_rate)

    def record(self, now: float, outcome: int) -> bool:
        if now >= self.edge:
            self._advance(math.floor(now))
        i = self.index
        self.b_calls[i] += 1
        self.calls += 1
        if outcome:
            fail = outcome & FAILURE
            slow = outcome >> 1
            self.b_fails[i] += fail
            self.b_slows[i] += slow
            self.failures += fail
            self.slows += slow
        elif not self.rejudge and self.calls != self.minimum:
            return False  # a success only matters after an eviction or on reaching the minimum
        self.rejudge = False
        return _judge(
            self.minimum, self.fail_ppm, self.slow_ppm, self.calls, self.failures, self.slows
        )

    def _advance(self, sec: int) -> None:
        """Move the head to ``sec``, evicting the buckets that fell out of the window."""
        gap = min(sec - self.head, self.size)
        for step in range(1, gap + 1):
            i = (self.head + step) % self.size
            if self.b_calls[i]:
                self.rejudge = True
                self.calls -= self.b_calls[i]
                self.failures -= self.b_fails[i]
                self.slows -= self.b_slows[i]
                self.b_calls[i] = self.b_fails[i] = self.b_slows[i] = 0
        self.head = sec
        self.edge = float(sec + 1)
        self.index = sec % self.size

    def figures(self, now: float) -> tuple[int, int, int]:
        if now >= self.edge:
            self._advance(math.floor(now))
        return (self.calls, self.failures, self.slows)
