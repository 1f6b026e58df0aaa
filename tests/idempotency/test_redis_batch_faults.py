"""RedisStore batching under faults: corrupt records, many calls per turn, a dead server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from safeship.idempotency import IdempotencyStoreError, RedisStore, State, StoredResponse
from tests.support.freeze_proxy import FreezeProxy

RESPONSE = StoredResponse(200, (), b"ok")


_MADE: list[RedisStore] = []


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    yield client
    await _close_made()
    await client.aclose()


async def _close_made() -> None:
    while _MADE:
        await _MADE.pop().aclose()


def _store(client: redis.asyncio.Redis) -> tuple[RedisStore, str]:
    prefix = f"test:idem:attack:{uuid.uuid4().hex}:"
    store = RedisStore(client, prefix=prefix)
    _MADE.append(store)
    return store, prefix


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
        store, _ = _store(client)
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
        await _close_made()
        await client.aclose()
    assert all(isinstance(g, IdempotencyStoreError) for g in got)


async def test_a_connection_killed_under_a_batch_fails_or_answers_every_waiter() -> None:
    """The server kills the store's connection while a batch of 10,000 calls waits on it
    (held in a frozen proxy, so the kill surely meets them): every caller learns "store
    down", none hangs, and the next call connects again."""
    proxy = FreezeProxy("127.0.0.1", 6379)
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9")
    killer = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    try:
        store, _ = _store(client)
        assert await store.get("warm") is None  # the store's own connection is open
        (upstream,) = [s for s in list(proxy._sockets) if s.getpeername()[1] == 6379]
        host, port = upstream.getsockname()[:2]  # the connection as the server sees it
        proxy.freeze()
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(store.claim(f"c{i}", "fp", lease=5, ttl=60)) for i in range(5000)
        ]
        tasks += [asyncio.ensure_future(store.get(f"c{i}")) for i in range(5000)]
        await asyncio.sleep(0.05)  # written: the frozen proxy holds them
        assert await killer.client_kill_filter(addr=f"{host}:{port}") == 1
        proxy.thaw()
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        errors = [g for g in got if isinstance(g, BaseException)]
        assert all(isinstance(g, IdempotencyStoreError) for g in errors), errors[:3]
        assert len(errors) == len(tasks)  # nothing reached the server before the kill
        again = await store.claim("after-the-kill", "fp", lease=5, ttl=60)
        assert again.token is not None  # the next call connects again
    finally:
        await _close_made()
        await client.aclose()
        await killer.aclose()
        proxy.close()
