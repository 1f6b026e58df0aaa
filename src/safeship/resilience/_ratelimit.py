"""Rate limiting with GCRA (the generic cell rate algorithm), in process or in Redis.

GCRA is a token bucket kept as a single timestamp, the *theoretical arrival time* (TAT):
each call of cost *c* pushes the TAT ``c × per / rate`` seconds further; a call is
allowed while the TAT stays within ``burst × per / rate`` seconds of now. Under
``max_wait`` a call that is early reserves its slot and waits for it; otherwise it is
rejected with :class:`~safeship.resilience.RateLimited`, whose ``retry_after`` says when
a slot frees (which :class:`~safeship.resilience.Retry` honours).

:class:`RateLimiter` keeps the TAT in memory for one process. :class:`RedisRateLimiter`
(sync redis client) and :class:`AsyncRedisRateLimiter` (``redis.asyncio``) keep it in
Redis under one key and update it with one atomic Lua script using the Redis server's
clock, so every process shares one limit and clock skew between hosts does not matter.
When Redis cannot be reached they let calls through (``fail_open=True``, the default,
with a throttled warning) or reject them (``fail_open=False``).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from safeship.resilience._clock import SYSTEM_CLOCK, Clock, sleep_async, sleep_sync
from safeship.resilience._errors import RateLimited
from safeship.resilience._log import logger
from safeship.resilience._policy import Guard, GuardedPolicy

__all__ = ["AsyncRedisRateLimiter", "RateLimiter", "RedisRateLimiter"]

P = ParamSpec("P")
R = TypeVar("R")

GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local wait = new_tat - tolerance - now
if wait > max_wait then return {0, string.format('%.0f', wait)} end
if wait < 0 then wait = 0 end
local ttl = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return {1, string.format('%.0f', wait)}
"""
"""Atomic GCRA step in microseconds: returns {allowed, wait_us}."""

_WARN_EVERY = 5.0
_EPSILON = 1e-9  # float noise in summed intervals must not cost a slot


class _Limits:
    """Validated rate settings shared by the three limiters."""

    __slots__ = ("burst", "interval", "max_wait", "name", "per", "rate")

    def __init__(self, rate: float, per: float, burst: int, max_wait: float, name: str) -> None:
        _check_number("rate", rate, positive=True)
        _check_number("per", per, positive=True)
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10**9:
            raise ValueError(f"rate limiter burst must be an int >= 1, got {burst!r}")
        _check_number("max_wait", max_wait, positive=False)
        self.rate, self.per, self.burst = float(rate), float(per), burst
        self.interval = self.per / self.rate
        self.max_wait = float(max_wait)
        self.name = name

    def check_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= self.burst:
            raise ValueError(f"cost must be an int from 1 to burst ({self.burst}), got {cost!r}")


class _SlotTaker(GuardedPolicy):
    """A limiter that takes one slot before each call, for plain functions and coroutines."""

    __slots__ = ()

    def acquire(self, cost: int = 1) -> None:
        """Take ``cost`` slots, waiting up to ``max_wait``; raise RateLimited otherwise."""
        raise NotImplementedError

    async def acquire_async(self, cost: int = 1) -> None:
        """The async twin of :meth:`acquire`."""
        raise NotImplementedError

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Take one slot before each call."""
        return _wrap_sync(self.acquire, fn)

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Take one slot before each call."""
        return _wrap_async(self.acquire_async, fn)

    def guard(self) -> Guard:
        """A single-use context manager taking one slot on entry (``with`` or ``async with``)."""
        return _LimiterGuard(self.acquire, self.acquire_async)


class RateLimiter(_SlotTaker):
    """An in-process GCRA limiter: ``rate`` calls per ``per`` seconds, ``burst`` at once."""

    __slots__ = ("_lock", "_now", "_tat", "clock", "limits")

    def __init__(
        self,
        *,
        rate: float,
        per: float = 1.0,
        burst: int = 1,
        max_wait: float = 0.0,
        name: str = "rate-limiter",
        clock: Clock | None = None,
    ) -> None:
        self.limits = _Limits(rate, per, burst, max_wait, name)
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self._now = self.clock.monotonic
        self._lock = threading.Lock()
        self._tat = -math.inf

    def reserve(self, cost: int = 1, *, max_wait: float | None = None) -> float | None:
        """Reserve ``cost`` slots: seconds to wait before using them, or None if too far."""
        booked = self._book(cost, max_wait)
        return None if booked is None else booked[0]

    def _book(self, cost: int, max_wait: float | None) -> tuple[float, float] | None:
        """(wait, the TAT this booking set), or None when the wait would be too long."""
        self.limits.check_cost(cost)
        limit = self.limits.max_wait if max_wait is None else max_wait
        interval = self.limits.interval
        with self._lock:
            now = self._now()
            new_tat = max(self._tat, now) + interval * cost
            wait = new_tat - interval * self.limits.burst - now
            if wait > limit + _EPSILON:
                return None
            self._tat = new_tat
            return max(0.0, wait), new_tat

    def _give_back(self, tat: float, cost: int) -> None:
        """Undo a booking whose caller stopped waiting, unless someone booked behind it."""
        with self._lock:
            if self._tat == tat:
                self._tat = tat - self.limits.interval * cost

    def try_acquire(self, cost: int = 1) -> bool:
        """Take ``cost`` slots now if they are free; never waits."""
        return self.reserve(cost, max_wait=0.0) is not None

    def retry_after(self, cost: int = 1) -> float:
        """Seconds until ``cost`` slots would be free (0 when they are)."""
        with self._lock:
            now = self._now()
            new_tat = max(self._tat, now) + self.limits.interval * cost
            wait = new_tat - self.limits.interval * self.limits.burst - now
            return wait if wait > _EPSILON else 0.0

    def _booked(self, cost: int) -> tuple[float, float]:
        """(wait, TAT) of a booking within ``max_wait``; raise RateLimited otherwise."""
        booked = self._book(cost, None)
        if booked is None:
            raise RateLimited(self.limits.name, self.retry_after(cost))
        return booked

    def acquire(self, cost: int = 1) -> None:
        """Take ``cost`` slots, sleeping up to ``max_wait``; raise RateLimited otherwise.

        A wait that ends in an exception (an interrupt) gives its slots back.
        """
        wait, tat = self._booked(cost)
        try:
            if wait > 0:
                sleep_sync(self.clock, wait)
        except BaseException:
            self._give_back(tat, cost)
            raise

    async def acquire_async(self, cost: int = 1) -> None:
        """The async twin of :meth:`acquire`; a cancelled wait gives its slots back."""
        wait, tat = self._booked(cost)
        try:
            if wait > 0:
                await sleep_async(self.clock, wait)
        except BaseException:
            self._give_back(tat, cost)
            raise


class _SharedLimit(_SlotTaker):
    """What the two Redis limiters share: settings, the script, the outage answer."""

    __slots__ = ("_script", "_warned_at", "clock", "fail_open", "key", "limits")

    def __init__(
        self,
        client: Any,
        key: str,
        *,
        rate: float,
        per: float = 1.0,
        burst: int = 1,
        max_wait: float = 0.0,
        fail_open: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.limits = _Limits(rate, per, burst, max_wait, key)
        self.key = key
        self.fail_open = fail_open
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self._script = client.register_script(GCRA_SCRIPT)
        self._warned_at = -math.inf

    def _script_args(self, cost: int, max_wait: float | None) -> list[int]:
        self.limits.check_cost(cost)
        wait = self.limits.max_wait if max_wait is None else max_wait
        interval_us = max(1, round(self.limits.interval * 1_000_000))
        return [interval_us, interval_us * self.limits.burst, cost, round(wait * 1_000_000)]

    def _unavailable(self, exc: Exception) -> tuple[bool, float]:
        """Redis failed: let the call through (fail open) or reject it, warning throttled."""
        now = self.clock.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "resilience.ratelimit.redis_unavailable",
                extra={"key": self.key, "fail_open": self.fail_open, "error": repr(exc)},
            )
        return (self.fail_open, 0.0 if self.fail_open else 1.0)

    def _granted(self, verdict: tuple[bool, float]) -> float:
        """Seconds to wait for the slot, or raise RateLimited with the hint."""
        allowed, seconds = verdict
        if not allowed:
            raise RateLimited(self.key, seconds)
        return seconds


class RedisRateLimiter(_SharedLimit):
    """A GCRA limiter shared by every process through one Redis key (sync client).

    It serves coroutines too (:meth:`acquire_async`): their Redis round trip runs in a
    worker thread (:func:`asyncio.to_thread`), so the event loop never blocks on the
    sync client.
    """

    __slots__ = ()

    def reserve(self, cost: int = 1, *, max_wait: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds): wait that long if allowed, else the retry-after hint."""
        args = self._script_args(cost, max_wait)
        try:
            reply = self._script(keys=[self.key], args=args)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means fail open/closed
            return self._unavailable(exc)
        return _parse_reply(reply)

    def acquire(self, cost: int = 1) -> None:
        """Take ``cost`` slots, sleeping up to ``max_wait``; raise RateLimited otherwise."""
        seconds = self._granted(self.reserve(cost))
        if seconds > 0:
            sleep_sync(self.clock, seconds)

    async def acquire_async(self, cost: int = 1) -> None:
        """Like :meth:`acquire`, asking Redis from a worker thread and sleeping async."""
        seconds = self._granted(await asyncio.to_thread(self.reserve, cost))
        if seconds > 0:
            await sleep_async(self.clock, seconds)


class AsyncRedisRateLimiter(_SharedLimit):
    """A GCRA limiter shared through Redis, for ``redis.asyncio`` clients.

    Async code only: an asyncio client belongs to its event loop, which a plain
    function cannot drive (use :class:`RedisRateLimiter`, which serves both).
    """

    __slots__ = ()

    async def reserve(self, cost: int = 1, *, max_wait: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds): wait that long if allowed, else the retry-after hint."""
        args = self._script_args(cost, max_wait)
        try:
            reply = await self._script(keys=[self.key], args=args)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means fail open/closed
            return self._unavailable(exc)
        return _parse_reply(reply)

    async def acquire_async(self, cost: int = 1) -> None:
        """Take ``cost`` slots, sleeping up to ``max_wait``; raise RateLimited otherwise."""
        seconds = self._granted(await self.reserve(cost))
        if seconds > 0:
            await sleep_async(self.clock, seconds)

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Not available: an asyncio Redis client cannot serve plain functions."""
        raise TypeError(
            "AsyncRedisRateLimiter needs async code; use RedisRateLimiter for sync code"
        )

    def guard(self) -> Guard:
        """A single-use (async) context manager taking one slot on entry."""
        return _LimiterGuard(None, self.acquire_async)


def _wrap_sync(acquire: Callable[[], None], fn: Callable[P, R]) -> Callable[P, R]:
    def limited_call(*args: P.args, **kwargs: P.kwargs) -> R:
        acquire()
        return fn(*args, **kwargs)

    return limited_call


def _wrap_async(
    acquire: Callable[[], Awaitable[None]], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Awaitable[R]]:
    async def limited_call(*args: P.args, **kwargs: P.kwargs) -> R:
        await acquire()
        return await fn(*args, **kwargs)

    return limited_call


class _LimiterGuard:
    __slots__ = ("_async", "_sync")

    def __init__(
        self, sync: Callable[[], None] | None, async_: Callable[[], Awaitable[None]] | None
    ) -> None:
        self._sync = sync
        self._async = async_

    def __enter__(self) -> None:
        if self._sync is None:
            raise TypeError("this rate limiter needs `async with`")
        self._sync()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def __aenter__(self) -> None:
        if self._async is None:
            raise TypeError("this rate limiter needs a plain `with`")
        await self._async()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _parse_reply(reply: Any) -> tuple[bool, float]:
    allowed, wait_us = reply
    return (int(allowed) == 1, max(0.0, float(wait_us) / 1_000_000))


def _check_number(field: str, value: object, *, positive: bool) -> None:
    bound = "> 0" if positive else ">= 0"
    message = f"rate limiter {field} must be a finite number {bound}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(message)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(message)
