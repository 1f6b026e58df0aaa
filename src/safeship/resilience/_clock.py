"""Time and randomness, injectable so tests run without sleeping.

Policies read time through a :class:`Clock`. Production uses :data:`SYSTEM_CLOCK`;
tests pass a :class:`safeship.resilience.testing.FakeClock`. The process-wide testing
switch (see :mod:`safeship.resilience.testing`) additionally makes every retry sleep
instant and every jitter draw deterministic, even for policies built at import time.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time as _time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """The time source of a policy: a monotonic reading, wall time, and sleeps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; used for every decision."""
        ...

    def time(self) -> float:
        """Seconds since the epoch; used only for timestamps shown to people."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic`, :func:`time.time` and real sleeps.

    The readings are the C functions themselves (no Python frame in between), because
    breakers read the clock on every call.
    """

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def sleep_async(self, seconds: float) -> None:
        """Sleep with :func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


@dataclass
class _TestingSwitch:
    """Process-wide testing mode; read only on slow paths (before a retry sleeps)."""

    enabled: bool = False
    rng: random.Random = field(default_factory=random.Random)
    sleeps: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)


TESTING = _TestingSwitch()


def jitter_source(rng: random.Random | None) -> random.Random:
    """The random source for a jitter draw: the testing one when testing mode is on."""
    if TESTING.enabled:
        return TESTING.rng
    return rng if rng is not None else _SHARED_RNG


def sleep_sync(clock: Clock, seconds: float) -> None:
    """Sleep on ``clock`` unless testing mode removes sleeps."""
    if TESTING.enabled:
        TESTING.record_sleep(seconds)
        return
    if seconds > 0:
        clock.sleep(seconds)


async def sleep_async(clock: Clock, seconds: float) -> None:
    """Sleep on ``clock`` unless testing mode removes sleeps (it still yields once)."""
    if TESTING.enabled:
        TESTING.record_sleep(seconds)
        await asyncio.sleep(0)
        return
    await clock.sleep_async(seconds)


_SHARED_RNG = random.Random()
