"""The Redis cache that degrades to a miss, and provider failover."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from safeship.resilience import Breaker, BreakerOpen, State, default_registry
from safeship.resilience.presets.cache import AsyncResilientCache, ResilientCache, cache_breaker
from safeship.resilience.presets.failover import (
    AsyncFailover,
    Failover,
    Provider,
    ProvidersExhausted,
)


@pytest.mark.redis
def test_the_cache_reads_and_writes_through_a_healthy_redis(redis_url: str, name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"safeship:test:{uuid.uuid4().hex}"
    try:
        with pytest.warns(DeprecationWarning, match=r"safeship\.cache\.Cache"):
            cache = ResilientCache(client, breaker=cache_breaker(name))
        assert cache.get(key) is None
        assert cache.set(key, "v", ex=30)
        assert cache.get(key) == b"v"
        assert cache.get_or_compute(key, lambda: "other") == b"v"
        assert cache.delete(key) == 1
        assert cache.degraded == 0
    finally:
        client.delete(key)
        client.close()


def test_a_dead_redis_reads_as_misses_and_stops_being_dialled(dead_redis: Any, name: str) -> None:
    with pytest.warns(DeprecationWarning, match="deprecated"):
        cache = ResilientCache(dead_redis, breaker=cache_breaker(name, open_duration=60))
    computed = [cache.get_or_compute("product:42", lambda: "from the database") for _ in range(3)]
    assert computed == ["from the database"] * 3
    assert cache.breaker.state is State.OPEN
    for _ in range(1000):
        assert cache.get("product:42") is None
        assert cache.set("product:42", "x") is False
    assert cache.breaker.counts()["failure"] == 3  # no connection attempt while open
    assert cache.degraded >= 2000


@pytest.mark.redis
async def test_the_async_cache_degrades_and_recovers(redis_url: str, name: str) -> None:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as RedisRetry
    from redis.backoff import NoBackoff

    dead = aioredis.Redis(host="127.0.0.1", port=1, retry=RedisRetry(NoBackoff(), 0))
    breaker = Breaker(name, open_duration=0.05, half_open_calls=1, registry=default_registry)
    with pytest.warns(DeprecationWarning, match="AsyncResilientCache is deprecated"):
        cache = AsyncResilientCache(dead, breaker=breaker)
    for _ in range(5):
        assert await cache.get("k") is None
    assert breaker.state is State.OPEN
    await dead.aclose()
    live = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.warns(DeprecationWarning, match="docs/cache.md"):
            cache = AsyncResilientCache(live, breaker=breaker)
        await asyncio.sleep(0.06)
        key = f"safeship:test:{uuid.uuid4().hex}"
        assert await cache.set(key, "v", ex=10)
        assert breaker.state is State.CLOSED
        assert await cache.get(key) == b"v"
        await live.delete(key)
    finally:
        await live.aclose()


def test_failover_moves_to_the_next_provider_and_skips_open_ones(name: str) -> None:
    calls: list[str] = []

    def primary(prompt: str) -> str:
        calls.append("primary")
        raise ConnectionError("primary down")

    def secondary(prompt: str) -> str:
        calls.append("secondary")
        return f"secondary: {prompt}"

    ai = Failover(name, [Provider("primary", primary), Provider("secondary", secondary)])
    for _ in range(7):
        assert ai.call("hi") == "secondary: hi"
    assert calls.count("primary") == 5  # then its breaker opened and it was skipped
    assert ai.breakers["primary"].state is State.OPEN
    assert ai.stats["primary"].rejected == 2
    assert ai.stats["secondary"].success == 7
    text = generate_latest(REGISTRY).decode()
    sample = f'{{failover="{name}",outcome="success",provider="secondary"}} 7.0'
    assert f"safeship_provider_calls_total{sample}" in text


def test_failover_falls_back_locally_or_reports_every_error(name: str) -> None:
    def down(prompt: str) -> str:
        raise TimeoutError("slow")

    local = Failover(name, [Provider("a", down)], fallback=lambda prompt: "local model")
    assert local.call("hi") == "local model"
    bare = Failover(name + "-bare", [Provider("a", down), Provider("b", down)])
    with pytest.raises(ProvidersExhausted) as caught:
        bare.call("hi")
    assert set(caught.value.errors) == {"a", "b"}


async def test_async_failover_uses_per_provider_timeouts(name: str) -> None:
    async def hanging(prompt: str) -> str:
        await asyncio.sleep(5)
        return "never"

    async def quick(prompt: str) -> str:
        return "quick"

    ai = AsyncFailover(name, [Provider("slow", hanging, timeout=0.02), Provider("fast", quick)])
    assert await ai.call("hi") == "quick"
    assert ai.stats["slow"].failure == 1
    ai.breakers["fast"].force_open()
    with pytest.raises(ProvidersExhausted) as caught:
        await ai.call("hi")
    assert isinstance(caught.value.errors["fast"], BreakerOpen)


def test_failover_needs_distinct_providers(name: str) -> None:
    with pytest.raises(ValueError, match="unique"):
        Failover(name, [Provider("a", str), Provider("a", str)])
