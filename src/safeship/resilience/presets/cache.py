"""A Redis cache that degrades to a miss instead of failing the request.

.. deprecated::
    Use :class:`safeship.cache.Cache` (``Cache("ns", redis_url=url, memory=False)``): the
    same breaker-guarded degradation, plus collision-free keys, single-flight and a
    cross-process lease, tags, invalidation after commit and metrics. These classes keep
    working (their keys and values stay raw, as before) and warn when built.

A cache is an optimisation: when Redis is down or slow the service should answer from
the source of truth, not return errors. :class:`ResilientCache` (sync ``redis.Redis``)
and :class:`AsyncResilientCache` (``redis.asyncio.Redis``) wrap the client's ``get``,
``set`` and ``delete`` behind a breaker: a Redis error counts as a failure and reads as a
miss (``None``); once the breaker is open, calls do not even reach the network for
``open_duration`` seconds, so a dead Redis costs nothing per request. Give the client
short socket timeouts (``socket_timeout=0.1``, ``socket_connect_timeout=0.1``).

::

    cache = ResilientCache(redis.Redis.from_url(url, socket_timeout=0.1))
    product = cache.get_or_compute("product:42", lambda: load_product(42), ex=300)
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from safeship.resilience._breaker import Breaker
from safeship.resilience._errors import BreakerOpen
from safeship.resilience._log import logger
from safeship.resilience._registry import DEFAULT_REGISTRY
from safeship.resilience._windows import ConsecutiveFailures

__all__ = ["AsyncResilientCache", "ResilientCache", "cache_breaker"]

Value = bytes | str | int | float


def _redis_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the Redis cache preset needs redis: pip install safeship[redis]"
        ) from exc
    return (RedisError, OSError)


def cache_breaker(name: str = "cache:redis", **options: Any) -> Breaker:
    """The default cache breaker: 3 failures in a row open it for 10 s, 1 trial closes it."""
    options.setdefault("window", ConsecutiveFailures(3))
    options.setdefault("open_duration", 10.0)
    options.setdefault("half_open_calls", 1)
    return DEFAULT_REGISTRY.get_or_create(
        name, lambda: Breaker(name, **{**options, "registry": None})
    )


class _Degrading:
    """What the sync and async caches share: one Redis command under the breaker, or a
    default, and the figures of how often the cache degraded."""

    def __init__(self, client: Any, breaker: Breaker | None) -> None:
        self.client = client
        self.breaker = breaker if breaker is not None else cache_breaker()
        self.errors = _redis_errors()
        self.degraded = 0

    def begin(self) -> tuple[int, float] | None:
        """(permit, start time) for one command, or None while the breaker is open."""
        try:
            permit = self.breaker.allow()
        except BreakerOpen:
            self.degraded += 1
            return None
        return permit, self.breaker.clock.monotonic()

    def succeeded(self, call: tuple[int, float]) -> None:
        self.breaker.record_success(*call)

    def failed(self, call: tuple[int, float], exc: BaseException) -> bool:
        """Record ``exc``; True when it is a Redis error (answered by the default)."""
        self.breaker.record_exception(*call, exc)
        if not isinstance(exc, self.errors):
            return False
        self.degraded += 1
        logger.debug(
            "resilience.cache.degraded", extra={"breaker": self.breaker.name, "error": repr(exc)}
        )
        return True


def _ttl_ms(ex: float | None) -> int | None:
    return None if ex is None else max(1, round(ex * 1000))


class _Cache:
    """The attributes both caches expose."""

    def __init__(self, client: Any, *, breaker: Breaker | None = None) -> None:
        warnings.warn(
            f"{type(self).__name__} is deprecated: use safeship.cache.Cache(namespace, "
            "redis_url=..., memory=False), which adds single-flight, a cross-process lease, "
            "canonical keys, tags and metrics (see docs/cache.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        self._core = _Degrading(client, breaker)
        self.client = client
        self.breaker = self._core.breaker

    @property
    def degraded(self) -> int:
        """How many operations answered as a miss/no-op because Redis failed or was shunned."""
        return self._core.degraded


class ResilientCache(_Cache):
    """Sync cache: ``get`` → value or None, ``set`` / ``delete`` → success flag."""

    def _run(self, command: Callable[[], Any], default: Any) -> Any:
        call = self._core.begin()
        if call is None:
            return default
        try:
            value = command()
        except BaseException as exc:
            if self._core.failed(call, exc):
                return default
            raise
        self._core.succeeded(call)
        return value

    def get(self, key: str) -> Any:
        """The cached value, or None on a miss or while Redis is failing."""
        return self._run(lambda: self.client.get(key), None)

    def set(self, key: str, value: Value, *, ex: float | None = None) -> bool:
        """Store ``value`` (expiring after ``ex`` seconds); False if Redis is failing."""
        return bool(self._run(lambda: self.client.set(key, value, px=_ttl_ms(ex)), False))

    def delete(self, *keys: str) -> int:
        """Delete ``keys``; the number deleted (0 if Redis is failing)."""
        return int(self._run(lambda: self.client.delete(*keys), 0))

    def get_or_compute(
        self, key: str, compute: Callable[[], Value], *, ex: float | None = None
    ) -> Any:
        """The cached value, or ``compute()`` stored best-effort and returned."""
        cached = self.get(key)
        if cached is None:
            cached = compute()
            self.set(key, cached, ex=ex)
        return cached


class AsyncResilientCache(_Cache):
    """The async twin of :class:`ResilientCache` for ``redis.asyncio`` clients."""

    async def _run(self, command: Callable[[], Awaitable[Any]], default: Any) -> Any:
        call = self._core.begin()
        if call is None:
            return default
        try:
            value = await command()
        except BaseException as exc:
            if self._core.failed(call, exc):
                return default
            raise
        self._core.succeeded(call)
        return value

    async def get(self, key: str) -> Any:
        """The cached value, or None on a miss or while Redis is failing."""
        return await self._run(lambda: self.client.get(key), None)

    async def set(self, key: str, value: Value, *, ex: float | None = None) -> bool:
        """Store ``value`` (expiring after ``ex`` seconds); False if Redis is failing."""
        return bool(await self._run(lambda: self.client.set(key, value, px=_ttl_ms(ex)), False))

    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; the number deleted (0 if Redis is failing)."""
        return int(await self._run(lambda: self.client.delete(*keys), 0))

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[Value]], *, ex: float | None = None
    ) -> Any:
        """The cached value, or ``await compute()`` stored best-effort and returned."""
        cached = await self.get(key)
        if cached is None:
            cached = await compute()
            await self.set(key, cached, ex=ex)
        return cached
