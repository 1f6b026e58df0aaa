"""Backoff schedules: how long :class:`~safeship.resilience.Retry` waits before each retry.

Each schedule is a frozen value object with one method, ``delay(retry, previous, rng)``,
where ``retry`` counts from 1 (the wait before the second attempt), ``previous`` is the
delay used last time (0.0 before the first retry) and ``rng`` is the random source
(deterministic in testing mode). All delays are capped at ``cap`` seconds.

=====================  ==================================================================
schedule               delay before retry *n* (``b`` = base, ``m`` = multiplier)
=====================  ==================================================================
``FullJitter``         uniform(0, min(cap, b·mⁿ⁻¹)) — the default; spreads a fleet best
``EqualJitter``        half of min(cap, b·mⁿ⁻¹), plus uniform(0, the other half)
``DecorrelatedJitter`` uniform(b, previous·3), capped — grows from the last delay
``Exponential``        min(cap, b·mⁿ⁻¹), no randomness
``Linear``             min(cap, b·n)
``Constant``           ``delay`` every time
=====================  ==================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Constant",
    "DecorrelatedJitter",
    "EqualJitter",
    "Exponential",
    "FullJitter",
    "Linear",
    "Schedule",
]

_MAX_SECONDS = 86_400.0


class Schedule(Protocol):
    """Anything with a ``delay(retry, previous, rng)`` method returning seconds."""

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ...


def _check(owner: str, field: str, value: object, *, low: float, allow_zero: bool) -> None:
    bound = f">= {low}" if allow_zero else f"> {low}"
    message = f"{owner}.{field} must be a number {bound} and <= 1 day, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(message)
    number = float(value)
    if not (number >= low if allow_zero else number > low) or number > _MAX_SECONDS:
        raise ValueError(message)


def _exponential(base: float, multiplier: float, cap: float, retry: int) -> float:
    exponent = min(retry - 1, 1024)
    try:
        return min(cap, base * multiplier**exponent)
    except OverflowError:
        return cap


@dataclass(frozen=True, slots=True)
class FullJitter:
    """Exponential growth with the whole delay drawn at random (AWS "full jitter")."""

    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 10.0

    def __post_init__(self) -> None:
        _check("FullJitter", "base", self.base, low=0.0, allow_zero=False)
        _check("FullJitter", "multiplier", self.multiplier, low=1.0, allow_zero=True)
        _check("FullJitter", "cap", self.cap, low=0.0, allow_zero=False)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return rng.uniform(0.0, _exponential(self.base, self.multiplier, self.cap, retry))


@dataclass(frozen=True, slots=True)
class EqualJitter:
    """Exponential growth; half the delay is fixed, the other half random."""

    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 10.0

    def __post_init__(self) -> None:
        _check("EqualJitter", "base", self.base, low=0.0, allow_zero=False)
        _check("EqualJitter", "multiplier", self.multiplier, low=1.0, allow_zero=True)
        _check("EqualJitter", "cap", self.cap, low=0.0, allow_zero=False)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        half = _exponential(self.base, self.multiplier, self.cap, retry) / 2
        return half + rng.uniform(0.0, half)


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter:
    """Each delay drawn between ``base`` and three times the previous one, capped."""

    base: float = 0.1
    cap: float = 10.0

    def __post_init__(self) -> None:
        _check("DecorrelatedJitter", "base", self.base, low=0.0, allow_zero=False)
        _check("DecorrelatedJitter", "cap", self.cap, low=0.0, allow_zero=False)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        upper = max(self.base, previous * 3)
        return min(self.cap, rng.uniform(self.base, upper))


@dataclass(frozen=True, slots=True)
class Exponential:
    """Exponential growth without randomness (predictable; prefer a jittered one)."""

    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 10.0

    def __post_init__(self) -> None:
        _check("Exponential", "base", self.base, low=0.0, allow_zero=False)
        _check("Exponential", "multiplier", self.multiplier, low=1.0, allow_zero=True)
        _check("Exponential", "cap", self.cap, low=0.0, allow_zero=False)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return _exponential(self.base, self.multiplier, self.cap, retry)


@dataclass(frozen=True, slots=True)
class Linear:
    """``base`` seconds more before each retry than before the last one."""

    base: float = 0.1
    cap: float = 10.0

    def __post_init__(self) -> None:
        _check("Linear", "base", self.base, low=0.0, allow_zero=False)
        _check("Linear", "cap", self.cap, low=0.0, allow_zero=False)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return min(self.cap, self.base * retry)


@dataclass(frozen=True, slots=True)
class Constant:
    """The same delay before every retry (0 retries at once)."""

    delay_seconds: float = 0.1

    def __post_init__(self) -> None:
        _check("Constant", "delay_seconds", self.delay_seconds, low=0.0, allow_zero=True)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return float(self.delay_seconds)
