"""Brute-force limiting shared through Redis by two app processes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from safeship.web import LimitPolicy, RedisFailureStore
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
