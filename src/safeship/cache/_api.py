"""The public :class:`Cache`: the decorator and the object API over :class:`CacheCore`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from safeship.cache._commit import invalidate_after_commit
from safeship.cache._core import _MISSING, CacheCore, _Degraded, check_tags
from safeship.cache._decorate import TagSpec, decorate
from safeship.cache._policy import Policy
from safeship.observe.health import CheckResult

__all__ = ["Cache"]

F = TypeVar("F", bound=Callable[..., Any])


class Cache(CacheCore):
    __doc__ = CacheCore.__doc__

    # -- the decorator --------------------------------------------------------------------
    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        ttl: float | None = None,
        tags: TagSpec = None,
        key: Callable[..., Any] | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        xfetch_beta: float | None = None,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        fn: Any = None,
        /,
        *,
        ttl: float | None = None,
        tags: TagSpec = None,
        key: Callable[..., Any] | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = None,
        xfetch_beta: float | None = None,
    ) -> Any:
        """``@cache`` or ``@cache(ttl=60, tags=["product:{product_id}"])``: memoize a sync
        or async function. ``key=`` maps the call's arguments to the value keyed on (for
        methods, or arguments without a canonical encoding); each other option overrides
        the cache's default for this function."""
        policy = self._policy(
            ttl, stale_while_revalidate, stale_if_error, negative_ttl, xfetch_beta
        )
        if fn is not None:
            return decorate(self, fn, policy, tags, key)
        return lambda function: decorate(self, function, policy, tags, key)

    def _policy(
        self,
        ttl: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        negative_ttl: float | None = _MISSING,
        xfetch_beta: float | None = None,
    ) -> Policy:
        base = self.policy
        return Policy(
            ttl if ttl is not None else base.ttl,
            base.stale_while_revalidate
            if stale_while_revalidate is None
            else stale_while_revalidate,
            base.stale_if_error if stale_if_error is None else stale_if_error,
            base.negative_ttl if negative_ttl is _MISSING or negative_ttl is None else negative_ttl,
            base.beta if xfetch_beta is None else xfetch_beta,
        )

    # -- object API, sync -------------------------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        """The value stored under ``key`` (any canonically encodable value), or ``default``."""
        full = self.space.item_key(key)
        entry, verdict = self._judge(full, self.policy)
        if entry is not None and verdict != "miss":
            self.stats.hits += 1
            return entry.value
        if self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(_Degraded):
                found = self._read_redis_sync(full)
                if found is not None and self.clock() < found.expires:
                    self.stats.hits += 1
                    self._remember(full, found, self.policy)
                    return found.value
        self.stats.misses += 1
        return default

    def set(
        self, key: Any, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds; other processes' memory tiers
        drop their copy."""
        full, policy = self.space.item_key(key), self._policy(ttl, negative_ttl=ttl)
        entry = self._entry(full, value, policy, 0.0, check_tags(tags))
        if entry is None:
            return
        if self.memory is not None:
            self.memory.drop_keys([full])
        self._remember(full, entry, policy)
        if self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(_Degraded):
                payload = self.serializer.dumps(value)
                self._sync(self.redis.put, entry, payload, self.clock(), True)

    def get_or_set(
        self,
        key: Any,
        load: Callable[[], Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Any:
        """The value under ``key``, or ``load()`` stored — one load per key at a time."""
        full, checked = self.space.item_key(key), check_tags(tags)
        return self.lookup_sync(full, full, load, self._policy(ttl), lambda: checked)

    def delete(self, key: Any) -> None:
        """Remove ``key`` here, in Redis and in every process's memory tier."""
        self.delete_keys([self.space.item_key(key)])

    def delete_keys(self, keys: list[str]) -> None:
        """Remove these full keys (``fn.key(...)`` gives one) everywhere."""
        self.mark_invalidated(keys=keys)
        if self.memory is not None:
            self.memory.drop_keys(keys)
        if keys and self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(_Degraded):
                self._sync(self.redis.drop_keys, keys)

    def invalidate_tags(self, *tags: str) -> None:
        """Remove every value carrying one of ``tags``, here, in Redis and in every process."""
        checked = list(check_tags(tags))
        self.mark_invalidated(tags=checked)
        if self.memory is not None:
            self.memory.drop_tags(checked)
        if checked and self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(_Degraded):
                self._sync(self.redis.drop_tags, checked)

    def invalidate_after_commit(
        self, transaction: Any, *, tags: Iterable[str] = (), keys: Iterable[Any] = ()
    ) -> None:
        """Invalidate ``tags`` and ``keys`` when ``transaction`` (a SQLAlchemy ``Session``,
        ``AsyncSession``, ``Connection`` or ``AsyncConnection``) commits; nothing on
        rollback. Invalidating before the commit would let a reader cache the old row."""
        full = [self.space.item_key(key) for key in keys]
        invalidate_after_commit(self, transaction, check_tags(tags), full)

    # -- object API, async ------------------------------------------------------------
    async def aget(self, key: Any, default: Any = None) -> Any:
        """The async twin of :meth:`get`."""
        full = self.space.item_key(key)
        entry, verdict = self._judge(full, self.policy)
        if entry is not None and verdict != "miss":
            self.stats.hits += 1
            return entry.value
        if self.redis is not None and self.redis.aclient is not None:
            with contextlib.suppress(_Degraded):
                found = await self._read_redis_async(full)
                if found is not None and self.clock() < found.expires:
                    self.stats.hits += 1
                    self._remember(full, found, self.policy)
                    return found.value
        self.stats.misses += 1
        return default

    async def aset(
        self, key: Any, value: Any, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """The async twin of :meth:`set`."""
        full, policy = self.space.item_key(key), self._policy(ttl, negative_ttl=ttl)
        entry = self._entry(full, value, policy, 0.0, check_tags(tags))
        if entry is None:
            return
        if self.memory is not None:
            self.memory.drop_keys([full])
        self._remember(full, entry, policy)
        if self.redis is not None and self.redis.aclient is not None:
            with contextlib.suppress(_Degraded):
                payload = self.serializer.dumps(value)
                await self._async(self.redis.aput, entry, payload, self.clock(), True)

    async def aget_or_set(
        self, key: Any, load: Callable[[], Awaitable[Any]], *, ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Any:  # fmt: skip
        """The async twin of :meth:`get_or_set` (``load`` returns an awaitable)."""
        full, checked = self.space.item_key(key), check_tags(tags)
        return await self.lookup_async(full, full, load, self._policy(ttl), lambda: checked)

    async def adelete(self, key: Any) -> None:
        """The async twin of :meth:`delete`."""
        await self.adelete_keys([self.space.item_key(key)])

    async def adelete_keys(self, keys: list[str]) -> None:
        """The async twin of :meth:`delete_keys`."""
        self.mark_invalidated(keys=keys)
        if self.memory is not None:
            self.memory.drop_keys(keys)
        if keys and self.redis is not None and self.redis.aclient is not None:
            with contextlib.suppress(_Degraded):
                await self._async(self.redis.adrop_keys, keys)

    async def ainvalidate_tags(self, *tags: str) -> None:
        """The async twin of :meth:`invalidate_tags`."""
        checked = list(check_tags(tags))
        self.mark_invalidated(tags=checked)
        if self.memory is not None:
            self.memory.drop_tags(checked)
        if checked and self.redis is not None and self.redis.aclient is not None:
            with contextlib.suppress(_Degraded):
                await self._async(self.redis.adrop_tags, checked)

    # -- figures, health, lifecycle ---------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counters, hit ratio, memory-tier size and the Redis breaker's state."""
        figures = self.stats.as_dict()
        figures["entries"] = len(self.memory) if self.memory is not None else 0
        figures["memory_bytes"] = self.memory.bytes if self.memory is not None else 0
        figures["redis"] = None if self.redis is None else self.breaker.state.value
        return figures

    def health_check(self) -> Callable[[], CheckResult]:
        """A check for :class:`safeship.observe.health.HealthRegistry` (which caches each
        result for the check's ``cache_ttl``, 5 s by default): ``warn`` while the Redis
        breaker is not closed (the cache serves without Redis), the hit ratio observed."""

        def check() -> CheckResult:
            figures = self.snapshot()
            state, ratio = figures["redis"], figures["hit_ratio"]
            healthy = state in (None, "closed")
            return CheckResult(
                status="pass" if healthy else "warn",
                output=None if healthy else f"Redis breaker {state}: serving without Redis",
                observed_value=None if ratio is None else round(ratio, 4),
                observed_unit="hit ratio",
                component_type="datastore",
            )

        return check

    async def drain(self) -> None:
        """Wait for background work: refreshes and after-commit invalidations."""
        while True:
            pending = [*self._aflights.values(), *self._background]
            pending = [
                task for task in pending if isinstance(task, asyncio.Future) and not task.done()
            ]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop this loop's subscription, close this loop's Redis connection and the async
        Redis client."""
        with contextlib.suppress(RuntimeError):
            listener = self._alisteners.pop(asyncio.get_running_loop(), None)
            if listener is not None:
                await listener.close()
        if self.redis is not None and self.redis.aclient is not None:
            await self.redis.aclose_wire()
            with contextlib.suppress(Exception):
                await self.redis.aclient.aclose()
                await self.redis.aclient.connection_pool.disconnect()

    def close(self) -> None:
        """Stop the sync subscription thread and close the sync Redis client."""
        if self._slisten is not None:
            self._slisten.close()
            self._slisten = None
        if self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(Exception):
                self.redis.client.close()
                self.redis.client.connection_pool.disconnect()
