"""Redis cut off through a TCP proxy the test owns (the shared Redis keeps running):
callers are still served, from the loader or the memory tier; the breaker stops trying;
once Redis is back the cache uses it again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from safeship.cache import Cache
from safeship.resilience import Breaker, BreakerRegistry, ConsecutiveFailures
from tests.conftest import need_service
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    need_service("Redis", "127.0.0.1", 6379)
    proxied = TcpProxy("127.0.0.1", 6379)
    try:
        yield proxied
    finally:
        proxied.close()


def _breaker() -> Breaker:
    return Breaker(
        "cache-cut-" + uuid.uuid4().hex[:8], window=ConsecutiveFailures(2),
        open_duration=0.3, half_open_calls=1, registry=BreakerRegistry(),
    )  # fmt: skip


async def test_async_callers_are_served_while_redis_is_cut(proxy: TcpProxy) -> None:
    breaker = _breaker()
    cache = Cache(
        "cut" + uuid.uuid4().hex[:8], redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        memory=False, breaker=breaker,
    )  # fmt: skip
    loads = 0

    @cache(ttl=60)
    async def lookup(pk: int) -> int:
        nonlocal loads
        loads += 1
        return pk * 2

    try:
        assert await lookup(1) == 2
        assert await lookup(1) == 2
        assert loads == 1
        proxy.cut()
        answers = [await lookup(1) for _ in range(10)]
        assert answers == [2] * 10
        figures = cache.snapshot()
        assert figures["degraded"] >= 10
        assert figures["redis"] == "open"
        assert cache.health_check()().status == "warn"
        proxy.restore()
        for _ in range(300):
            await lookup(2)
            if cache.breaker.state.value == "closed":
                break
            await asyncio.sleep(0.01)
        assert cache.breaker.state.value == "closed"
        before = loads
        assert await lookup(2) == 4
        assert loads == before  # served from Redis again
    finally:
        await cache.aclose()


def test_sync_callers_keep_their_memory_hits_and_load_misses_while_redis_is_cut(
    proxy: TcpProxy,
) -> None:
    cache = Cache(
        "cut" + uuid.uuid4().hex[:8], redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        breaker=_breaker(),
    )  # fmt: skip
    cache.start_sync()
    loads: list[int] = []

    @cache(ttl=60)
    def lookup(pk: int) -> int:
        loads.append(pk)
        return pk * 2

    try:
        assert lookup(1) == 2
        proxy.cut()
        assert [lookup(3), lookup(3)] == [6, 6]
        assert cache.snapshot()["degraded"] >= 1
        cache.set("k", 1)
        cache.delete("k")
        cache.invalidate_tags("anything")
        assert 3 in loads
    finally:
        cache.close()


async def test_async_command_to_a_silent_redis_is_bounded_and_degrades() -> None:
    """A server that accepts connections but never answers: the cache's own per-command
    bound (its async client has no socket timeout) ends the wait, and the caller gets the
    loader's value."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections queue in the backlog; nothing ever replies
    cache = Cache(
        "silent" + uuid.uuid4().hex[:8],
        redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
        memory=False,
        breaker=_breaker(),
    )

    @cache(ttl=60)
    async def lookup(pk: int) -> int:
        return pk * 2

    try:
        assert await asyncio.wait_for(lookup(3), 30) == 6
        figures = cache.snapshot()
        assert figures["degraded"] >= 1
        assert figures["errors"] >= 1
    finally:
        await cache.aclose()
        silent.close()


def _refused_url() -> str:
    """A Redis URL where nothing listens: each connect is refused at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_with_redis_refusing_async_callers_do_not_wait_for_the_subscription() -> None:
    """Only the first call waits for the subscription's first attempt; once it failed,
    callers go to the loader at once (before, each waited a second for it)."""
    cache = Cache("refused" + uuid.uuid4().hex[:8], redis_url=_refused_url(), memory=False)

    @cache(ttl=60)
    async def lookup(pk: int) -> int:
        return pk * 2

    try:
        started = asyncio.get_running_loop().time()
        answers = [await lookup(i) for i in range(10)]
        spent = asyncio.get_running_loop().time() - started
        assert answers == [i * 2 for i in range(10)]
        assert spent < 3.0, spent  # ten one-second waits before
        assert cache.snapshot()["degraded"] >= 10
    finally:
        await cache.aclose()


def test_with_redis_refusing_sync_callers_do_not_wait_for_the_subscription() -> None:
    import time

    cache = Cache("refused" + uuid.uuid4().hex[:8], redis_url=_refused_url(), memory=False)

    @cache(ttl=60)
    def lookup(pk: int) -> int:
        return pk * 2

    try:
        started = time.monotonic()
        answers = [lookup(i) for i in range(10)]
        spent = time.monotonic() - started
        assert answers == [i * 2 for i in range(10)]
        assert spent < 3.0, spent
        assert cache.snapshot()["degraded"] >= 10
    finally:
        cache.close()
