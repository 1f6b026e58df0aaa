"""Test helpers: frozen time, instant retries, deterministic jitter, recorded transitions.

Typical use in a pytest suite::

    from safeship.resilience.testing import FakeClock, instant_retries

    def test_checkout_survives_a_blip():
        clock = FakeClock()
        breaker = Breaker("payments", clock=clock, register=False)
        with instant_retries() as sleeps:
            ...
        assert sleeps == [...]          # what the retries would have waited
        clock.advance(60)               # an open breaker's wait passes at once
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from safeship.resilience import _default_registry as registry
from safeship.resilience._breaker_types import Transition
from safeship.resilience._clock import TESTING

__all__ = [
    "FakeClock",
    "TransitionRecorder",
    "instant_retries",
    "isolated_registry",
    "set_testing",
]


class FakeClock:
    """A :class:`~safeship.resilience.Clock` that only moves when told to (or slept on).

    Sleeping advances it instantly, so code that backs off still observes the time it
    asked for. Thread-safe.
    """

    def __init__(self, start: float = 1_000.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._offset = wall_start - start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def monotonic(self) -> float:
        """The fake monotonic reading."""
        return self._now

    def time(self) -> float:
        """Fake wall time, moving in step with :meth:`monotonic`."""
        return self._now + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("FakeClock cannot go back in time")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance by it, without blocking."""
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))

    async def sleep_async(self, seconds: float) -> None:
        """Record the sleep, advance by it, and yield to the event loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)


def set_testing(enabled: bool, *, seed: int = 0) -> None:
    """Switch process-wide testing mode: retry sleeps skipped, jitter seeded by ``seed``."""
    with TESTING.lock:
        TESTING.enabled = enabled
        TESTING.rng = random.Random(seed)
        TESTING.sleeps = []


@contextmanager
def instant_retries(*, seed: int = 0) -> Iterator[list[float]]:
    """Within the block, retries and rate-limit waits do not sleep; yields their delays."""
    set_testing(True, seed=seed)
    try:
        yield TESTING.sleeps
    finally:
        set_testing(False)


class TransitionRecorder:
    """A breaker listener that keeps every transition, for assertions."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def __call__(self, transition: Transition) -> None:
        self.transitions.append(transition)

    @property
    def states(self) -> list[str]:
        """The target state of each transition, in order."""
        return [item.to_state.value for item in self.transitions]


@contextmanager
def isolated_registry() -> Iterator[None]:
    """Forget the breakers registered inside the block when it ends."""
    before = {breaker.name for breaker in registry.all_breakers()}
    try:
        yield
    finally:
        for breaker in registry.all_breakers():
            if breaker.name not in before:
                registry.unregister(breaker.name)
