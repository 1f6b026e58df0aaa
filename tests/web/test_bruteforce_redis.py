"""Brute-force limiting shared through Redis by two app processes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.web import LimitPolicy, RedisFailureStore, protect
from tests.support.tcp_proxy import TcpProxy
from tests.web.server_process import serve

pytestmark = pytest.mark.redis


async def test_redis_store_limits_then_blocks(redis_url: str) -> None:
    store = RedisFailureStore(redis_url, prefix=f"safeship-test-{uuid.uuid4().hex}")
    try:
        verdicts = [await store.record_failure("203.0.113.9") for _ in range(20)]
        assert [v.allowed for v in verdicts[:4]] == [True] * 4
        assert not verdicts[4].allowed
        assert not verdicts[4].blocked
        assert 0 < verdicts[4].retry_after <= 60
        assert verdicts[19].blocked
        assert verdicts[19].retry_after > 800
        assert (await store.check("203.0.113.9")).blocked
        assert (await store.check("198.51.100.3")).allowed
    finally:
        await store.aclose()


async def test_short_windows_expire_in_redis(redis_url: str) -> None:
    policy = LimitPolicy(max_per_window=2, window=0.2, block_after=100, block_for=60)
    store = RedisFailureStore(redis_url, policy=policy, prefix=f"t-{uuid.uuid4().hex}")
    try:
        await store.record_failure("ip")
        assert not (await store.record_failure("ip")).allowed
        for _ in range(100):  # the key's TTL ends the window after 0.2 s
            if (await store.check("ip")).allowed:
                break
            await asyncio.sleep(0.02)
        assert (await store.check("ip")).allowed
    finally:
        await store.aclose()


@pytest.mark.slow
def test_two_processes_share_failure_counts(redis_url: str) -> None:
    env = {
        "TEST_SAFESHIP_REDIS_URL": redis_url,
        "TEST_SAFESHIP_AUTH_PREFIX": f"safeship-test-{uuid.uuid4().hex}",
    }
    with (
        serve("serve_apps:redis_auth_app", env=env, ready_path="/") as one,
        serve("serve_apps:redis_auth_app", env=env, ready_path="/") as two,
    ):
        statuses = []
        for n in range(30):
            target = (one, two)[n % 2]
            response = httpx.get(target.url + "/admin", headers={"X-API-Key": f"guess{n}"})
            statuses.append(response.status_code)
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429] * 25
        blocked = httpx.get(two.url + "/admin", headers={"X-API-Key": "ss_good"})
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 800


def events_of(records: list[logging.LogRecord]) -> list[str]:
    return [r.msg.get("event", "") if isinstance(r.msg, dict) else r.msg for r in records]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 6379)
    yield proxy
    proxy.close()


async def test_a_redis_outage_falls_back_to_memory_and_returns_to_redis(
    redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = RedisFailureStore(
        f"redis://127.0.0.1:{redis_proxy.port}/0",
        prefix=f"safeship-test-{uuid.uuid4().hex}",
        clock=clock,
    )
    check = store.health_check()
    try:
        for _ in range(3):
            await store.record_failure("203.0.113.9")  # counted in Redis
        assert (await check()).status == "pass"

        redis_proxy.cut()
        caplog.set_level(logging.INFO, logger="safeship.web.limiter")
        during = [await store.record_failure("203.0.113.9") for _ in range(5)]
        assert [v.allowed for v in during] == [True] * 4 + [False]  # memory counts anew
        assert not (await store.check("203.0.113.9")).allowed
        assert (await store.check("198.51.100.3")).allowed
        assert store.degraded
        health = await check()
        assert health.status == "warn" and "Redis is unreachable" in (health.output or "")
        degraded: list[Any] = [
            r.msg for r in caplog.records if events_of([r]) == ["auth.store_degraded"]
        ]
        assert len(degraded) == 1  # one line for the outage, not one per request
        assert degraded[0]["error"] == "ConnectionError" and degraded[0]["fallback"] == "memory"

        redis_proxy.restore()
        assert store.degraded  # no retry before retry_every has passed
        clock.now += store.retry_every
        after = await store.record_failure("203.0.113.9")  # the 4th failure in Redis
        assert not store.degraded
        assert after.allowed
        assert not (await store.record_failure("203.0.113.9")).allowed  # 5th: limited
        assert (await check()).status == "pass"
        assert events_of(caplog.records).count("auth.store_recovered") == 1
    finally:
        await store.aclose()


async def test_the_health_check_brings_the_store_back_without_traffic(
    redis_proxy: TcpProxy,
) -> None:
    clock = Clock()
    store = RedisFailureStore(f"redis://127.0.0.1:{redis_proxy.port}/0", clock=clock)
    check = store.health_check()
    try:
        redis_proxy.cut()
        await store.check("203.0.113.9")
        assert (await check()).status == "warn"
        redis_proxy.restore()
        clock.now += store.retry_every
        assert (await check()).status == "pass"
        assert not store.degraded
    finally:
        await store.aclose()


async def test_protect_answers_keyed_requests_while_redis_is_out(redis_proxy: TcpProxy) -> None:
    store = RedisFailureStore(f"redis://127.0.0.1:{redis_proxy.port}/0")
    inner = Starlette(routes=[Route("/api/x", lambda r: PlainTextResponse("ok"))])
    app = protect(inner, api_keys=["ss_good"], auth_store=store, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.4", 1))
    redis_proxy.cut()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            good = await client.get("/api/x", headers={"X-API-Key": "ss_good"})
            bad = [
                (await client.get("/api/x", headers={"X-API-Key": f"bad{n}"})).status_code
                for n in range(6)
            ]
        assert (good.status_code, good.text) == (200, "ok")
        assert bad == [401] * 5 + [429]
    finally:
        await store.aclose()


def test_store_settings_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match=r"RedisFailureStore\.timeout"):
        RedisFailureStore("redis://127.0.0.1:6379/0", timeout=0)
