"""Rate limiting with GCRA, in memory and shared through Redis."""

from __future__ import annotations

import uuid

import pytest

from safeship.resilience import (
    AsyncRedisRateLimiter,
    RateLimited,
    RateLimiter,
    RedisRateLimiter,
    Retry,
)
from safeship.resilience.testing import FakeClock


def test_a_burst_passes_then_calls_are_spaced_by_the_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=10, burst=3, clock=clock)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after() == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


def test_the_steady_rate_holds_over_time(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=5, per=1.0, burst=1, clock=clock)
    allowed = 0
    for _ in range(1000):
        allowed += limiter.try_acquire()
        clock.advance(0.01)
    assert allowed == 50


def test_a_rejection_says_when_to_come_back_and_retry_honours_it(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2, burst=1, clock=clock)
    guarded = limiter(lambda: "sent")
    assert guarded() == "sent"
    with pytest.raises(RateLimited) as rejected:
        guarded()
    assert rejected.value.retry_after == pytest.approx(0.5)
    assert Retry(attempts=2, clock=clock).call(guarded) == "sent"
    assert clock.slept == [pytest.approx(0.5)]


def test_max_wait_reserves_a_slot_and_waits_for_it(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=4, burst=1, max_wait=1.0, clock=clock)
    for _ in range(4):
        limiter.acquire()
    assert clock.slept == [pytest.approx(0.25)] * 3
    limiter2 = RateLimiter(rate=1, burst=1, max_wait=0.5, clock=clock)
    limiter2.acquire()
    with pytest.raises(RateLimited):
        limiter2.acquire()


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0)
    with pytest.raises(ValueError, match="cost"):
        RateLimiter(rate=1, burst=2).try_acquire(3)


@pytest.mark.redis
def test_the_redis_limiter_is_shared_by_every_client(redis_url: str) -> None:
    import redis

    key = f"safeship:test:rl:{uuid.uuid4().hex}"
    first = redis.Redis.from_url(redis_url)
    second = redis.Redis.from_url(redis_url)
    try:
        a = RedisRateLimiter(first, key, rate=5, per=60, burst=5)
        b = RedisRateLimiter(second, key, rate=5, per=60, burst=5)
        outcomes = [a.reserve()[0] if i % 2 else b.reserve()[0] for i in range(8)]
        assert outcomes.count(True) == 5
        allowed, retry_after = a.reserve()
        assert not allowed
        assert 0 < retry_after <= 12
        assert 0 < first.pttl(key) <= 61_000
    finally:
        first.delete(key)
        first.close()
        second.close()


@pytest.mark.redis
async def test_the_async_redis_limiter_rejects_with_a_hint(redis_url: str) -> None:
    import redis.asyncio as aioredis

    key = f"safeship:test:rl:{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        limiter = AsyncRedisRateLimiter(client, key, rate=1, per=10, burst=2)

        @limiter
        async def send() -> str:
            return "sent"

        assert [await send(), await send()] == ["sent", "sent"]
        with pytest.raises(RateLimited) as rejected:
            await send()
        assert 0 < (rejected.value.retry_after or 0) <= 10
    finally:
        await client.delete(key)
        await client.aclose()


def test_an_unreachable_redis_fails_open_or_closed_as_configured(dead_redis: object) -> None:
    client = dead_redis
    open_limiter = RedisRateLimiter(client, "k", rate=1)
    assert open_limiter.reserve() == (True, 0.0)
    closed_limiter = RedisRateLimiter(client, "k", rate=1, fail_open=False)
    with pytest.raises(RateLimited):
        closed_limiter.acquire()


@pytest.mark.redis
async def test_the_sync_redis_limiter_guards_coroutines_too(redis_url: str) -> None:
    import redis

    key = f"safeship:test:rl:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    try:
        limiter = RedisRateLimiter(client, key, rate=1, per=60, burst=2)

        @limiter
        async def send() -> str:
            return "sent"

        assert await send() == "sent"
        async with limiter:
            pass
        with pytest.raises(RateLimited) as rejected:
            await limiter.call_async(send)
        assert 0 < (rejected.value.retry_after or 0) <= 60
        assert client.exists(key) == 1
    finally:
        client.delete(key)
        client.close()
