"""RedisStore batching under faults: corrupt records, many calls per turn, a dead server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from safeship.idempotency import IdempotencyStoreError, RedisStore, State, StoredResponse

RESPONSE = StoredResponse(200, (), b"ok")


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    yield client
    await client.aclose()


def _store(client: redis.asyncio.Redis) -> tuple[RedisStore, str]:
    prefix = f"test:idem:attack:{uuid.uuid4().hex}:"
    return RedisStore(client, prefix=prefix), prefix


async def test_one_corrupt_record_fails_only_its_own_caller(client: redis.asyncio.Redis) -> None:
    store, prefix = _store(client)
    await client.set(prefix + "{bad}", b"not json")
    got = await asyncio.gather(
        store.claim("good", "fp", lease=5, ttl=60),
        store.renew("bad", "tok", lease=5),
        store.claim("good2", "fp", lease=5, ttl=60),
        store.renew("good", "nope", lease=5),
        return_exceptions=True,
    )
    assert isinstance(got[1], Exception)
    assert got[0].token is not None and got[2].token is not None  # type: ignore[union-attr]
    assert got[3] is False


async def test_the_same_key_claimed_and_taken_over_many_times_in_one_turn(
    client: redis.asyncio.Redis,
) -> None:
    store, _ = _store(client)
    claims = await asyncio.gather(*(store.claim("one", "fp", lease=5, ttl=60) for _ in range(50)))
    assert sum(c.token is not None for c in claims) == 1
    # the lease is alive: nobody takes over
    overs = await asyncio.gather(*(store.take_over("one", lease=5) for _ in range(10)))
    assert overs == [None] * 10


async def test_very_many_calls_in_one_turn(client: redis.asyncio.Redis) -> None:
    store, _ = _store(client)
    keys = [f"k{i}" for i in range(20000)]
    claims = await asyncio.gather(*(store.claim(k, "fp", lease=5, ttl=60) for k in keys))
    assert all(c.token is not None for c in claims)
    records = await asyncio.gather(*(store.get(k) for k in keys))
    assert all(r is not None and r.state is State.IN_FLIGHT for r in records)


async def test_a_free_key_reads_none_beside_a_held_one(client: redis.asyncio.Redis) -> None:
    store, _ = _store(client)
    claim = await store.claim("held", "fp", lease=5, ttl=60)
    assert claim.token
    await store.complete("held", claim.token, RESPONSE, ttl=60)
    got = await asyncio.gather(store.get("free"), store.get("held"), store.get("free2"))
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[1].response == RESPONSE


async def test_a_dead_server_fails_every_waiter_of_a_mixed_batch() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/9", socket_connect_timeout=1)
    try:
        store = RedisStore(client, prefix="x:")
        got = await asyncio.wait_for(
            asyncio.gather(
                store.claim("a", "fp", lease=5, ttl=60),
                store.get("a"),
                store.release("a", "t"),
                return_exceptions=True,
            ),
            timeout=30,
        )
    finally:
        await client.aclose()
    assert all(isinstance(g, IdempotencyStoreError) for g in got)


async def test_a_connection_killed_under_a_batch_fails_or_answers_every_waiter() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9", max_connections=1)
    killer = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    try:
        store, _ = _store(client)
        own = await client.client_id()  # the one pooled connection, killed below by its id
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(store.claim(f"c{i}", "fp", lease=5, ttl=60)) for i in range(5000)
        ]
        tasks += [asyncio.ensure_future(store.get(f"c{i}")) for i in range(5000)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await killer.client_kill_filter(_id=str(own))
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
    finally:
        await client.aclose()
        await killer.aclose()
    errors = [g for g in got if isinstance(g, BaseException)]
    assert all(isinstance(g, IdempotencyStoreError) for g in errors), errors[:3]
