"""Attacks on the listener's ``tried``/``failing`` (Redis refusing, then accepting; a
subscription lost after being up).  Redis itself keeps running: a port that refuses (a
bound socket that does not listen) later starts listening and forwards to Redis.  Keys go
to database 13 and are deleted at the end."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from safeship.cache import Cache
from safeship.resilience import Breaker, BreakerRegistry, ConsecutiveFailures
from tests.conftest import need_service
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

DB = 13


class LateRedis(TcpProxy):
    """A port that refuses connections until ``open()``, then forwards to Redis;
    ``cut()`` drops the live connections (as a lost link), ``close()`` ends it all."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 6379, listening=False)
        self.url = f"redis://127.0.0.1:{self.port}/{DB}"


@pytest.fixture
def late() -> Iterator[LateRedis]:
    need_service("Redis", "127.0.0.1", 6379)
    proxy = LateRedis()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace; every key of it in database 13 is deleted after the test."""
    import redis

    name = "attack29" + uuid.uuid4().hex[:8]
    yield name
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{DB}")
    try:
        keys = list(client.scan_iter(match=f"*{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _breaker() -> Breaker:
    return Breaker(
        "attack29-" + uuid.uuid4().hex[:8], window=ConsecutiveFailures(2),
        open_duration=0.2, half_open_calls=1, registry=BreakerRegistry(),
    )  # fmt: skip


def _direct(namespace: str, **kw: Any) -> Cache:
    """Another process's cache on the same namespace, straight to Redis."""
    return Cache(namespace, redis_url=f"redis://127.0.0.1:6379/{DB}", **kw)


# -- start() while Redis is still coming up ------------------------------------------
async def test_start_waits_for_a_subscription_that_comes_up_within_lease_ttl(
    late: LateRedis, namespace: str
) -> None:
    """docs/cache.md: "Call ``await cache.start()`` at start-up to subscribe before the
    first request."  start() waits up to lease_ttl; Redis refusing for its first 0.3 s
    (a container starting) must still see it wait until subscribed, not return at the
    first refused attempt as the per-call path does."""
    cache = Cache(namespace, redis_url=late.url, lease_ttl=5, breaker=_breaker())
    opener = threading.Timer(0.3, late.open)
    opener.start()
    try:
        started = time.monotonic()
        await cache.start()
        spent = time.monotonic() - started
        listener = cache._alisteners[asyncio.get_running_loop()]
        assert listener.ready.is_set(), f"start() returned after {spent:.3f} s, unsubscribed"
    finally:
        opener.cancel()
        await cache.aclose()


def test_start_sync_waits_for_a_subscription_that_comes_up_within_lease_ttl(
    late: LateRedis, namespace: str
) -> None:
    cache = Cache(namespace, redis_url=late.url, lease_ttl=5, breaker=_breaker())
    opener = threading.Timer(0.3, late.open)
    opener.start()
    try:
        started = time.monotonic()
        cache.start_sync()
        spent = time.monotonic() - started
        assert cache._slisten is not None
        assert cache._slisten.ready.is_set(), f"start_sync() returned after {spent:.3f} s"
    finally:
        opener.cancel()
        cache.close()


# -- recovery: refusing, then accepting -------------------------------------------------
async def test_refused_then_accepting_the_cache_uses_redis_again_and_memory_only_once_subscribed(
    late: LateRedis, namespace: str
) -> None:
    cache = Cache(namespace, redis_url=late.url, lease_ttl=2, breaker=_breaker())
    other = _direct(namespace)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    try:
        assert await cache.aget_or_set("k", load) == 1
        assert await cache.aget_or_set("k", load) == 2  # degraded: no memory, no Redis
        assert len(cache.memory) == 0  # type: ignore[arg-type]
        listener = cache._alisteners[asyncio.get_running_loop()]
        assert listener.failing and not listener.ready.is_set()
        late.open()
        deadline = time.monotonic() + 6
        while not listener.ready.is_set() and time.monotonic() < deadline:
            assert len(cache.memory) == 0  # type: ignore[arg-type]  # never before subscribed
            await cache.aget_or_set("k", load)
            await asyncio.sleep(0.02)
        assert listener.ready.is_set() and not listener.failing
        await asyncio.sleep(0.3)  # let the breaker close
        await other.aset("k", 100)
        # Redis used again: its value is read, then kept in memory (subscribed)
        for _ in range(50):
            if await cache.aget_or_set("k", load) == 100:
                break
            await asyncio.sleep(0.02)
        assert await cache.aget_or_set("k", load) == 100
        assert len(cache.memory) == 1
        # an invalidation from the other process drops the memory copy
        await other.adelete("k")
        for _ in range(100):
            if len(cache.memory) == 0:
                break
            await asyncio.sleep(0.01)
        assert len(cache.memory) == 0
        before = loads
        assert await cache.aget_or_set("k", load) == before + 1
    finally:
        await cache.aclose()
        await other.aclose()


def test_sync_refused_then_accepting_recovers_and_gets_invalidations(
    late: LateRedis, namespace: str
) -> None:
    cache = Cache(namespace, redis_url=late.url, lease_ttl=2, breaker=_breaker())
    other = _direct(namespace)
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    try:
        started = time.monotonic()
        for _ in range(5):
            cache.get_or_set("k", load)
        assert time.monotonic() - started < 2.0
        assert len(cache.memory) == 0  # type: ignore[arg-type]
        late.open()
        deadline = time.monotonic() + 6
        assert cache._slisten is not None
        while not cache._slisten.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache._slisten.ready.is_set()
        time.sleep(0.3)
        other.set("k", 7)
        for _ in range(50):
            if cache.get_or_set("k", load) == 7:
                break
            time.sleep(0.02)
        assert cache.get_or_set("k", load) == 7
        other.delete("k")
        for _ in range(100):
            if len(cache.memory) == 0:  # type: ignore[arg-type]
                break
            time.sleep(0.01)
        assert len(cache.memory) == 0  # type: ignore[arg-type]
    finally:
        cache.close()
        other.close()


async def test_concurrent_first_calls_with_redis_refusing_wait_once_not_each(
    late: LateRedis, namespace: str
) -> None:
    cache = Cache(namespace, redis_url=late.url, memory=False, breaker=_breaker())

    async def load() -> int:
        return 1

    try:
        started = time.monotonic()
        results = await asyncio.gather(*[cache.aget_or_set(f"k{i}", load) for i in range(50)])
        assert results == [1] * 50
        assert time.monotonic() - started < 1.5
    finally:
        await cache.aclose()


# -- a subscription lost after being up ---------------------------------------------------
async def test_a_subscription_lost_then_back_clears_memory_and_misses_no_invalidation(
    late: LateRedis, namespace: str
) -> None:
    late.open()
    cache = Cache(namespace, redis_url=late.url, lease_ttl=2, breaker=_breaker())
    other = _direct(namespace)
    version = {"v": 1}

    async def load() -> int:
        return version["v"]

    try:
        await cache.start()
        listener = cache._alisteners[asyncio.get_running_loop()]
        assert listener.ready.is_set()
        assert await cache.aget_or_set("k", load) == 1
        assert len(cache.memory) == 1  # type: ignore[arg-type]
        late.cut()
        # the other process changes the value while this one cannot hear it
        version["v"] = 2
        await other.adelete("k")
        for _ in range(200):
            if not listener.ready.is_set():
                break
            await asyncio.sleep(0.01)
        assert not listener.ready.is_set() and listener.failing
        for _ in range(100):  # on_gap runs after the pub/sub connection's close (an await)
            if len(cache.memory) == 0:  # type: ignore[arg-type]
                break
            await asyncio.sleep(0.01)
        assert len(cache.memory) == 0  # type: ignore[arg-type]  # the gap cleared it
        started = time.monotonic()
        assert await cache.aget_or_set("k", load) == 2  # no wait, the loader
        assert time.monotonic() - started < 0.5
        assert len(cache.memory) == 0  # type: ignore[arg-type]
        late.restore()
        for _ in range(400):
            if listener.ready.is_set():
                break
            await asyncio.sleep(0.01)
        assert listener.ready.is_set() and not listener.failing
        await asyncio.sleep(0.3)
        assert await cache.aget_or_set("k", load) == 2
        version["v"] = 3
        await other.adelete("k")
        for _ in range(100):
            if len(cache.memory) == 0:
                break
            await asyncio.sleep(0.01)
        assert await cache.aget_or_set("k", load) == 3
    finally:
        await cache.aclose()
        await other.aclose()


def test_two_event_loops_each_wait_for_their_own_first_attempt(
    late: LateRedis, namespace: str
) -> None:
    """One loop's failed attempt must not make another loop's listener skip its wait
    (each loop has its own listener and ``tried``)."""
    cache = Cache(namespace, redis_url=late.url, memory=False, lease_ttl=2, breaker=_breaker())

    async def load() -> int:
        return 1

    async def first() -> None:
        await cache.aget_or_set("a", load)  # refused: this loop's listener fails

    asyncio.run(first())
    late.open()
    ready: list[bool] = []

    async def second() -> None:
        await cache.start()
        ready.append(cache._alisteners[asyncio.get_running_loop()].ready.is_set())
        await cache.aclose()

    asyncio.run(second())
    assert ready == [True]
