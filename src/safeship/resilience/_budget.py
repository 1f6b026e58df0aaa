"""Retry budget: a fleet-safe cap on how much retrying may add to the load.

Retries multiply traffic exactly when a dependency is struggling. A :class:`RetryBudget`
shared by the policies calling one dependency allows retries for at most ``ratio`` of
the calls made over the last ``window`` seconds, plus a small floor of
``min_per_second`` retries per second so that a quiet service can still retry. When the
budget is spent, :class:`~safeship.resilience.Retry` gives up at once (re-raising the
failure) instead of sleeping and trying again.
"""

from __future__ import annotations

import math
import threading

from safeship.resilience._clock import SYSTEM_CLOCK, Clock
from safeship.resilience._log import logger

__all__ = ["RetryBudget"]

_WARN_EVERY = 1.0


class RetryBudget:
    """Allow retries up to ``ratio`` × calls (+ a floor) over a sliding time window."""

    __slots__ = (
        "_calls",
        "_edge",
        "_head",
        "_index",
        "_lock",
        "_now",
        "_retries",
        "_total_calls",
        "_total_retries",
        "_warned_at",
        "floor",
        "min_per_second",
        "name",
        "ratio",
        "window",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: int = 10,
        min_per_second: float = 1.0,
        name: str = "retry-budget",
        clock: Clock | None = None,
    ) -> None:
        _check_number("ratio", ratio, 0.0, 100.0)
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 3600:
            raise ValueError(
                f"RetryBudget.window must be whole seconds from 1 to 3600, got {window!r}"
            )
        _check_number("min_per_second", min_per_second, 0.0, 1e6)
        self.ratio = float(ratio)
        self.window = window
        self.min_per_second = float(min_per_second)
        self.floor = self.min_per_second * window
        self.name = name
        self._now = (clock or SYSTEM_CLOCK).monotonic
        self._lock = threading.Lock()
        self._calls = [0] * window
        self._retries = [0] * window
        self._head = -(2**62)
        self._edge = float(self._head + 1)
        self._index = 0
        self._total_calls = 0
        self._total_retries = 0
        self._warned_at = -math.inf

    def record_call(self) -> None:
        """Count one first attempt (each one earns ``ratio`` of a retry)."""
        now = self._now()
        with self._lock:
            if now >= self._edge:
                self._advance(now)
            self._calls[self._index] += 1
            self._total_calls += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and a throttled warning) when spent."""
        now = self._now()
        with self._lock:
            if now >= self._edge:
                self._advance(now)
            allowed = self._total_retries + 1 <= self.ratio * self._total_calls + self.floor
            if allowed:
                self._retries[self._index] += 1
                self._total_retries += 1
                return True
            warn = now - self._warned_at >= _WARN_EVERY
            if warn:
                self._warned_at = now
        if warn:
            logger.warning(
                "resilience.retry.budget_exhausted",
                extra={"budget": self.name, "ratio": self.ratio, "window": self.window},
            )
        return False

    def figures(self) -> tuple[int, int]:
        """(calls, retries) inside the current window."""
        now = self._now()
        with self._lock:
            if now >= self._edge:
                self._advance(now)
            return (self._total_calls, self._total_retries)

    def _advance(self, now: float) -> None:
        sec = math.floor(now)
        gap = min(sec - self._head, self.window)
        for step in range(1, gap + 1):
            i = (self._head + step) % self.window
            self._total_calls -= self._calls[i]
            self._total_retries -= self._retries[i]
            self._calls[i] = self._retries[i] = 0
        self._head = sec
        self._edge = float(sec + 1)
        self._index = sec % self.window


def _check_number(field: str, value: object, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    if not ok:
        raise ValueError(
            f"RetryBudget.{field} must be a number from {low} to {high}, got {value!r}"
        )
