"""The cache: memory tier, optional Redis tier, single-flight, lease, staleness, tags.

The decorated function's hit path (``_decorate``) reads the memory tier inline; anything
else comes here. A miss goes through single-flight (one load per key per process), then
Redis (two-level or Redis-only), then the Redis lease (one load per key across
processes; waiters wake on pub/sub), then the loader. Redis sits behind a breaker: an
error or an open breaker counts as ``degraded`` and the call carries on without Redis,
so a dead Redis costs the loader, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from safeship._redis_wire import pool_setting, unsupported
from safeship.cache._entry import Entry, xfetch_due
from safeship.cache._errors import CacheConfigError, CacheError
from safeship.cache._keys import KeySpace
from safeship.cache._memory import MemoryTier
from safeship.cache._policy import Policy, check_seconds
from safeship.cache._redis import AsyncListener, RedisTier, SyncListener
from safeship.cache._serializers import JsonSerializer, Serializer
from safeship.cache._stats import Stats, register_stats
from safeship.resilience import Breaker, BreakerOpen, ConsecutiveFailures

__all__ = ["CacheCore", "check_tags"]

logger = logging.getLogger("safeship.cache")
_MISSING: Any = object()
#: Seconds one Redis command may take on the clients the cache builds from a URL.
_COMMAND_SECONDS = 2.0
#: Names of recent invalidations remembered for loads in flight.
_MAX_MARKS = 10_000


class _Degraded(Exception):  # noqa: N818 - internal signal, never escapes the cache
    """Redis was skipped (breaker open) or failed: carry on without it."""


class _Flight:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError, CacheError)


class _Renewer:
    """Extends the leases this process holds for sync loads, every ``period`` seconds, in
    one daemon thread that runs only while some lease is held. A lease that is no longer
    ours (``renew`` returns False) is not renewed again."""

    def __init__(self, renew: Callable[[str], bool], period: float) -> None:
        self._renew = renew
        self._period = period
        self._held: dict[str, None] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def hold(self, key: str) -> None:
        with self._cond:
            self._held[key] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="safeship-cache-lease", daemon=True
                )
                self._thread.start()

    def drop(self, key: str) -> None:
        with self._cond:
            self._held.pop(key, None)
            self._cond.notify()

    def _run(self) -> None:
        due = time.monotonic() + self._period
        while True:
            with self._cond:
                while self._held and (left := due - time.monotonic()) > 0:
                    self._cond.wait(left)  # a drop wakes it to see whether any is left
                if not self._held:
                    self._thread = None
                    return
                keys = list(self._held)
            due = time.monotonic() + self._period
            for key in keys:
                with self._cond:
                    if key not in self._held:
                        continue
                if not self._renew(key):
                    logger.warning("cache.lease_lost", extra={"key": key})
                    self.drop(key)


class CacheCore:
    """A namespace of cached values: ``@cache(ttl=...)`` memoizes sync and async functions,
    ``get``/``set``/``delete`` (and ``aget``/``aset``/``adelete``) store by key.

    Without Redis it is an in-process LRU/TTL cache bounded by ``max_entries`` and
    ``max_bytes``. With ``redis_url`` (or ``redis``/``aredis`` clients) it is two-level:
    the memory tier in front of Redis, kept coherent by Redis pub/sub; ``memory=False``
    makes it Redis-only.
    """

    def __init__(
        self,
        namespace: str,
        *,
        env: str = "dev",
        version: int = 1,
        ttl: float = 300.0,
        memory: bool = True,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        redis_url: str | None = None,
        redis: Any = None,
        aredis: Any = None,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        negative_ttl: float | None = None,
        xfetch_beta: float = 1.0,
        lease_ttl: float = 10.0,
        lock_timeout: float | None = None,
        breaker: Breaker | None = None,
        serializer: Serializer | None = None,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.space = KeySpace(env=env, namespace=namespace, version=version)
        self.policy = Policy(
            ttl, stale_while_revalidate, stale_if_error, negative_ttl, xfetch_beta
        )  # fmt: skip
        self.lease_ttl = check_seconds("lease_ttl", lease_ttl, zero=False) or 10.0
        self.lock_timeout = check_seconds("lock_timeout", lock_timeout, zero=False) or (
            3 * self.lease_ttl
        )
        self.memory = MemoryTier(max_entries=max_entries, max_bytes=max_bytes) if memory else None
        self.stats = Stats(namespace)
        self.serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        self.clock = clock
        self.draw = draw
        self.redis = self._redis_tier(redis_url, redis, aredis)
        if self.redis is None and not memory:
            raise CacheConfigError("Cache(memory=False) needs Redis: pass redis_url= or clients")
        self.breaker = breaker if breaker is not None else self._default_breaker()
        self._redis_failures = _redis_errors() if self.redis is not None else ()
        self._flights: dict[str, _Flight] = {}
        self._aflights: dict[str, asyncio.Task[Any]] = {}
        #: Redis reads in flight by key: the reading loop, then its followers' futures.
        self._areads: dict[str, list[Any]] = {}
        self._epoch = self._floor = 0
        self._marks: dict[str, int] = {}
        self._flight_lock = threading.Lock()
        self._background: set[Any] = set()
        self._alisteners: dict[asyncio.AbstractEventLoop, AsyncListener] = {}
        self._slisten: SyncListener | None = None
        self._sync_renewer: _Renewer | None = None
        register_stats(self)

    # -- construction helpers ------------------------------------------------------------
    def _redis_tier(self, url: str | None, client: Any, aclient: Any) -> RedisTier | None:
        if url is None and client is None and aclient is None:
            return None
        from safeship._extras import require

        require("redis", "redis", feature="the Redis cache tier")
        seconds: float | None = None
        if url is not None:
            import redis as sync_redis
            import redis.asyncio as async_redis

            if client is None:
                pool = sync_redis.BlockingConnectionPool.from_url(
                    url, max_connections=64, timeout=self.lock_timeout,
                    socket_timeout=_COMMAND_SECONDS, socket_connect_timeout=1.0,
                )  # fmt: skip
                client = sync_redis.Redis(connection_pool=pool)
            if aclient is None:
                # Async commands run on the tier's own connection per event loop
                # (``_wire``), addressed like this pool; the pool serves the pub/sub
                # subscriptions.
                apool = async_redis.ConnectionPool.from_url(
                    url, max_connections=64, socket_timeout=None, socket_connect_timeout=1.0
                )
                aclient = async_redis.Redis(connection_pool=apool)
                # The URL's own ``?socket_timeout=`` bounds each command when it has one.
                seconds = apool.connection_kwargs.get("socket_timeout") or _COMMAND_SECONDS
        if aclient is not None:
            given: Any = getattr(aclient, "connection_pool", None)
            refused = unsupported(given)
            if refused is not None:
                raise CacheConfigError(f"aredis= client not usable: {refused}")
            if seconds is None:  # a given client's own socket timeout (redis-py's default)
                seconds = pool_setting(given, "socket_timeout")
        return RedisTier(
            self.space, client=client, aclient=aclient, lease_ttl=self.lease_ttl,
            command_seconds=seconds,
        )  # fmt: skip

    def _default_breaker(self) -> Breaker:
        from safeship.resilience import BreakerRegistry

        name = f"cache:{self.space.env}:{self.space.namespace}"
        return Breaker(
            name,
            window=ConsecutiveFailures(3),
            open_duration=5.0,
            half_open_calls=1,
            registry=BreakerRegistry(),
        )

    def __repr__(self) -> str:
        tiers = "+".join(t for t, on in (("memory", self.memory), ("redis", self.redis)) if on)
        return f"Cache({self.space.prefix!r}, tiers={tiers})"

    # -- Redis under the breaker ------------------------------------------------------
    def _begin(self) -> tuple[int, float]:
        try:
            permit = self.breaker.allow()
        except BreakerOpen as exc:
            self.stats.degraded += 1
            raise _Degraded from exc
        return permit, self.breaker.clock.monotonic()

    def _failed(self, call: tuple[int, float], exc: BaseException) -> None:
        self.breaker.record_exception(call[0], call[1], exc)
        if isinstance(exc, self._redis_failures):
            self.stats.errors += 1
            self.stats.degraded += 1
            logger.warning(
                "cache.redis_failed",
                extra={"namespace": self.space.namespace, "error": repr(exc)},
            )
            raise _Degraded from exc

    def _sync(self, command: Callable[..., Any], *args: Any) -> Any:
        call = self._begin()
        try:
            result = command(*args)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self.breaker.record_success(*call)
        return result

    async def _async(self, command: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        call = self._begin()
        try:
            result = await command(*args)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self.breaker.record_success(*call)
        return result

    # -- invalidation messages from any process ---------------------------------------
    def _on_message(self, op: str, items: list[str]) -> None:
        if op == "keys":
            self.mark_invalidated(keys=items)
            if self.memory is not None:
                self.memory.drop_keys(items)
        elif op == "tags":
            self.mark_invalidated(tags=items)
            if self.memory is not None:
                self.memory.drop_tags(items)

    def mark_invalidated(self, *, keys: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        """Note an invalidation, so a load that started before it does not store its
        (possibly older) result afterwards."""
        self._epoch += 1
        if len(self._marks) > _MAX_MARKS:  # forget names: every running load counts as hit
            self._marks.clear()
            self._floor = self._epoch
        for key in keys:
            self._marks[key] = self._epoch
        for tag in tags:
            self._marks["tag:" + tag] = self._epoch

    def _invalidated_since(self, epoch: int, key: str, tags: tuple[str, ...]) -> bool:
        if self._floor > epoch:
            return True
        marks = self._marks
        return marks.get(key, 0) > epoch or any(marks.get("tag:" + t, 0) > epoch for t in tags)

    def _on_gap(self) -> None:
        if self.memory is not None:
            self.memory.clear()

    def _alistener(self) -> AsyncListener:
        loop = asyncio.get_running_loop()
        listener = self._alisteners.get(loop)
        if listener is None:
            assert self.redis is not None
            listener = AsyncListener(self.redis, self._on_message, self._on_gap)
            self._alisteners[loop] = listener
        listener.start()
        return listener

    def _slistener(self) -> SyncListener:
        if self._slisten is None:
            assert self.redis is not None
            self._slisten = SyncListener(self.redis, self._on_message, self._on_gap)
        self._slisten.start()
        return self._slisten

    async def start(self) -> None:
        """Subscribe to the invalidation channel now (two-level caches also subscribe on
        first use). Until subscribed, the memory tier is not used for hits."""
        if self.redis is not None and self.redis.aclient is not None:
            await self._alistener().wait_ready(self.lease_ttl, through_failures=True)

    def start_sync(self) -> None:
        """The sync twin of :meth:`start`, for sync clients (a listener thread)."""
        if self.redis is not None and self.redis.client is not None:
            self._slistener().wait_ready(self.lease_ttl, through_failures=True)

    # -- entries --------------------------------------------------------------------------
    def _entry(
        self, key: str, value: Any, policy: Policy, delta: float, tags: tuple[str, ...]
    ) -> Entry | None:
        ttl = policy.ttl
        if value is None:
            if policy.negative_ttl is None:
                return None
            ttl = policy.negative_ttl
        now = self.clock()
        return Entry(
            key, value, expires=now + ttl, stale_until=now + ttl + policy.keep,
            delta=delta, beta=policy.beta, tags=tags,
        )  # fmt: skip

    def _remember(self, local: Any, entry: Entry, policy: Policy) -> None:
        if self.memory is not None and self._coherent():
            fresh = Entry(
                entry.key, entry.value, expires=entry.expires, stale_until=entry.stale_until,
                delta=entry.delta, beta=policy.beta, tags=entry.tags,
            )  # fmt: skip
            self.memory.put(local, fresh)

    def _coherent(self) -> bool:
        """May the memory tier serve? Alone, always; in front of Redis, once subscribed
        (the subscription carries other processes' invalidations)."""
        if self.redis is None:
            return True
        listeners: list[Any] = [*self._alisteners.values(), self._slisten]
        if any(listener is not None and listener.ready.is_set() for listener in listeners):
            return True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self.redis.client is not None:
                self._slistener()
        else:
            if self.redis.aclient is not None:
                self._alistener()
        return False

    def _judge(self, local: Any, policy: Policy) -> tuple[Entry | None, str]:
        """The memory entry under ``local`` and what to do: fresh, early, stale, miss."""
        if self.memory is None:
            return None, "miss"
        entry = self.memory.lookup(local)
        if entry is None:
            return None, "miss"
        now = self.clock()
        if now < entry.expires:
            if now < entry.early_from or not xfetch_due(
                now, entry.expires, entry.delta, policy.beta, self.draw()
            ):
                return entry, "fresh"
            return entry, "early"
        if now < entry.expires + policy.stale_while_revalidate:
            return entry, "stale"
        if now < entry.expires + policy.stale_if_error:
            return entry, "miss"  # kept only to answer a loader error
        return None, "miss"

    # -- sync path ----------------------------------------------------------------------
    def lookup_sync(
        self, key: str, local: Any, load: Callable[[], Any], policy: Policy,
        tags: Callable[[], tuple[str, ...]],
    ) -> Any:  # fmt: skip
        """The value of ``key``: memory, then single-flight → Redis → lease → ``load``."""
        entry, verdict = self._judge(local, policy)
        if verdict == "fresh":
            self.stats.hits += 1
            return entry.value  # type: ignore[union-attr]
        if verdict == "early":
            self.stats.hits += 1
            self.stats.early_refreshes += 1
            self._refresh_in_thread(key, local, load, policy, tags, entry)
            return entry.value  # type: ignore[union-attr]
        if verdict == "stale":
            self.stats.stale_served += 1
            self._refresh_in_thread(key, local, load, policy, tags, entry)
            return entry.value  # type: ignore[union-attr]
        if self.redis is not None and self.redis.client is not None:
            with contextlib.suppress(_Degraded):
                found = self._read_redis_sync(key)
                if found is not None and self.clock() < found.expires:
                    self._remember(local, found, policy)
                    self.stats.hits += 1
                    return found.value
        return self._flight(key, lambda: self._fill_sync(key, local, load, policy, tags, entry))

    def _flight(self, key: str, make: Callable[[], Any]) -> Any:
        with self._flight_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            self.stats.coalesced += 1
            flight.event.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = make()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._flight_lock:
                del self._flights[key]
            flight.event.set()
        return flight.value

    def _refresh_in_thread(self, key: str, local: Any, load: Callable[[], Any],
                           policy: Policy, tags: Callable[[], tuple[str, ...]],
                           stale: Entry | None) -> None:  # fmt: skip
        with self._flight_lock:
            if key in self._flights:
                return

        def refresh() -> None:
            try:
                self._flight(
                    key, lambda: self._fill_sync(key, local, load, policy, tags, stale, True)
                )
            except Exception as exc:  # noqa: BLE001 - a background refresh only logs
                logger.warning("cache.refresh_failed", extra={"key": key, "error": repr(exc)})

        thread = threading.Thread(target=refresh, name="safeship-cache-refresh", daemon=True)
        thread.start()

    def _read_redis_sync(self, key: str) -> Entry | None:
        assert self.redis is not None
        return self._sync(self.redis.get, key, self.serializer.loads)  # type: ignore[no-any-return]

    def _fill_sync(
        self, key: str, local: Any, load: Callable[[], Any], policy: Policy,
        tags: Callable[[], tuple[str, ...]], stale: Entry | None, refresh: bool = False,
    ) -> Any:  # fmt: skip
        leased, use_redis = False, self.redis is not None and self.redis.client is not None
        try:
            if use_redis:
                found, leased = self._obtain_sync(key, stale if refresh else None)
                if found is not None:
                    self._remember(local, found, policy)
                    self.stats.hits += 1
                    return found.value
                if leased:
                    self._renewer().hold(key)
            return self._load_sync(key, local, load, policy, tags, stale, use_redis)
        except _Degraded:
            return self._load_sync(key, local, load, policy, tags, stale, False)
        finally:
            if leased:
                self._renewer().drop(key)
                self._release_sync(key)

    def _renewer(self) -> _Renewer:
        if self._sync_renewer is None:
            with self._flight_lock:
                if self._sync_renewer is None:
                    self._sync_renewer = _Renewer(self._renew_sync, self.lease_ttl / 3)
        return self._sync_renewer

    def _renew_sync(self, key: str) -> bool:
        assert self.redis is not None
        try:
            return bool(self._sync(self.redis.renew, key))
        except _Degraded:
            return True  # Redis unreachable now: try again next period (the lease may live)

    def _release_sync(self, key: str) -> None:
        assert self.redis is not None
        with contextlib.suppress(_Degraded):
            self._sync(self.redis.release, key)

    def _obtain_sync(self, key: str, current: Entry | None) -> tuple[Entry | None, bool]:
        """A newer Redis entry, or the lease (True), or neither once ``lock_timeout`` passed."""
        assert self.redis is not None
        deadline = time.monotonic() + self.lock_timeout
        listener = self._slistener()
        if not listener.ready.is_set() and (
            listener.ever_ready or not listener.wait_ready(min(1.0, self.lease_ttl))
        ):
            self.stats.degraded += 1  # no subscription: waiters could not be woken
            raise _Degraded("no pub/sub subscription")
        while True:
            event = listener.waiter(key)
            try:
                found = self._read_redis_sync(key)
                if _newer(found, current, self.clock()):
                    return found, False
                if self._sync(self.redis.acquire, key):
                    return None, True
                self.stats.lock_waits += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, False
                event.wait(min(self.lease_ttl, left))
            finally:
                listener.forget(key, event)

    def _load_sync(
        self, key: str, local: Any, load: Callable[[], Any], policy: Policy,
        tags: Callable[[], tuple[str, ...]], stale: Entry | None, use_redis: bool,
    ) -> Any:  # fmt: skip
        self.stats.misses += 1
        self.stats.loads += 1
        started, epoch = time.monotonic(), self._epoch
        try:
            value = load()
        except Exception:
            if stale is not None and self.clock() < stale.expires + policy.stale_if_error:
                self.stats.stale_served += 1
                return stale.value
            raise
        entry = self._entry(key, value, policy, time.monotonic() - started, tags())
        if entry is not None and not self._invalidated_since(epoch, key, entry.tags):
            self._remember(local, entry, policy)
            if use_redis:
                self._store_sync(entry)
        return value

    def _store_sync(self, entry: Entry) -> None:
        assert self.redis is not None
        with contextlib.suppress(_Degraded):
            payload = self.serializer.dumps(entry.value)
            self._sync(self.redis.put, entry, payload, self.clock())

    # -- async path ---------------------------------------------------------------------
    async def lookup_async(
        self, key: str, local: Any, load: Callable[[], Awaitable[Any]], policy: Policy,
        tags: Callable[[], tuple[str, ...]],
    ) -> Any:  # fmt: skip
        """The async twin of :meth:`lookup_sync`."""
        entry, verdict = self._judge(local, policy)
        if verdict == "fresh":
            self.stats.hits += 1
            return entry.value  # type: ignore[union-attr]
        if verdict in ("early", "stale"):
            if verdict == "early":
                self.stats.hits += 1
                self.stats.early_refreshes += 1
            else:
                self.stats.stale_served += 1
            if self._flight_here(key) is None:
                self._start_flight(
                    key, self._fill_async(key, local, load, policy, tags, entry, True)
                )
            return entry.value  # type: ignore[union-attr]
        task = self._flight_here(key)
        if task is None and self.redis is not None and self.redis.aclient is not None:
            found = await self._read_once(key, local, policy)
            if found is not _MISSING:
                return found
            task = self._flight_here(key)
        if task is None:
            task = self._start_flight(key, self._fill_async(key, local, load, policy, tags, entry))
        else:
            self.stats.coalesced += 1
        return await asyncio.shield(task)

    async def _read_once(self, key: str, local: Any, policy: Policy) -> Any:
        """A Redis hit without a task: one GET per key at a time, concurrent callers share
        it; ``_MISSING`` when Redis has no fresh value (or is degraded). A read of the key
        in another event loop is not shared (its future belongs to that loop)."""
        loop = asyncio.get_running_loop()
        reading = self._areads.get(key)
        if reading is not None and reading[0] is loop:
            self.stats.coalesced += 1
            follower = loop.create_future()
            reading.append(follower)
            return await follower
        own, reading = reading is None, [loop]  # a follower's future only when one comes
        if own:
            self._areads[key] = reading
        result = _MISSING
        try:
            found = await self._async(self.redis.aget, key, self.serializer.loads)  # type: ignore[union-attr]
            if found is not None and self.clock() < found.expires:
                self._remember(local, found, policy)
                self.stats.hits += 1
                result = found.value
        except _Degraded:
            pass
        finally:
            if own and self._areads.get(key) is reading:
                del self._areads[key]
            for follower in reading[1:]:
                if not follower.done():
                    follower.set_result(result)
        return result

    def _flight_here(self, key: str) -> asyncio.Task[Any] | None:
        """The load of ``key`` running in this event loop (another loop's cannot be
        awaited here)."""
        task = self._aflights.get(key)
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _start_flight(self, key: str, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._aflights[key] = task

        def done(finished: asyncio.Task[Any]) -> None:
            if self._aflights.get(key) is finished:
                del self._aflights[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: followers re-raise it themselves

        task.add_done_callback(done)
        return task

    async def _read_redis_async(self, key: str) -> Entry | None:
        assert self.redis is not None
        return await self._async(self.redis.aget, key, self.serializer.loads)  # type: ignore[no-any-return]

    async def _fill_async(
        self, key: str, local: Any, load: Callable[[], Awaitable[Any]], policy: Policy,
        tags: Callable[[], tuple[str, ...]], stale: Entry | None, refresh: bool = False,
    ) -> Any:  # fmt: skip
        leased, use_redis = False, self.redis is not None and self.redis.aclient is not None
        renewing: asyncio.Task[None] | None = None
        try:
            if use_redis:
                found, leased = await self._obtain_async(key, stale if refresh else None)
                if found is not None:
                    self._remember(local, found, policy)
                    self.stats.hits += 1
                    return found.value
                if leased:
                    renewing = asyncio.ensure_future(self._renew_async(key))
            return await self._load_async(key, local, load, policy, tags, stale, use_redis)
        except _Degraded:
            return await self._load_async(key, local, load, policy, tags, stale, False)
        finally:
            if renewing is not None:
                renewing.cancel()
            if leased:
                await self._release_async(key)

    async def _renew_async(self, key: str) -> None:
        """Extend the lease every third of ``lease_ttl`` while its loader runs; stop once
        it is no longer this holder's (it expired and another process took it)."""
        assert self.redis is not None
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if not await self._async(self.redis.arenew, key):
                    logger.warning("cache.lease_lost", extra={"key": key})
                    return
            except _Degraded:
                continue  # Redis unreachable now: try again next period

    async def _release_async(self, key: str) -> None:
        assert self.redis is not None
        with contextlib.suppress(_Degraded):
            await self._async(self.redis.arelease, key)

    async def _obtain_async(self, key: str, current: Entry | None) -> tuple[Entry | None, bool]:
        assert self.redis is not None
        deadline = time.monotonic() + self.lock_timeout
        listener = self._alistener()
        if not listener.ready.is_set() and (
            listener.ever_ready or not await listener.wait_ready(min(1.0, self.lease_ttl))
        ):
            self.stats.degraded += 1  # no subscription: waiters could not be woken
            raise _Degraded("no pub/sub subscription")
        while True:
            future = listener.waiter(key)
            try:
                found = await self._read_redis_async(key)
                if _newer(found, current, self.clock()):
                    return found, False
                if await self._async(self.redis.aacquire, key):
                    return None, True
                self.stats.lock_waits += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, min(self.lease_ttl, left))
            finally:
                listener.forget(key, future)

    async def _load_async(
        self, key: str, local: Any, load: Callable[[], Awaitable[Any]], policy: Policy,
        tags: Callable[[], tuple[str, ...]], stale: Entry | None, use_redis: bool,
    ) -> Any:  # fmt: skip
        self.stats.misses += 1
        self.stats.loads += 1
        started, epoch = time.monotonic(), self._epoch
        try:
            value = await load()
        except Exception:
            if stale is not None and self.clock() < stale.expires + policy.stale_if_error:
                self.stats.stale_served += 1
                return stale.value
            raise
        entry = self._entry(key, value, policy, time.monotonic() - started, tags())
        if entry is not None and not self._invalidated_since(epoch, key, entry.tags):
            self._remember(local, entry, policy)
            if use_redis:
                await self._store_async(entry)
        return value

    async def _store_async(self, entry: Entry) -> None:
        assert self.redis is not None
        with contextlib.suppress(_Degraded):
            payload = self.serializer.dumps(entry.value)
            await self._async(self.redis.aput, entry, payload, self.clock())


def _newer(found: Entry | None, current: Entry | None, now: float) -> bool:
    """Is the Redis entry fresh, and newer than the one being refreshed (if any)?"""
    if found is None or now >= found.expires:
        return False
    return current is None or found.expires > current.expires


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(tags)
    for tag in checked:
        if not isinstance(tag, str) or not 0 < len(tag) <= 256:
            raise CacheConfigError(f"cache tag {tag!r}: use a non-empty str of at most 256 chars")
    return checked
