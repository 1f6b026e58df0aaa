"""The primitive: an atomic claim (Redis SET NX PX, a unique insert in the caller's
transaction), fail-closed when the store is down, duplicates counted."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from prometheus_client import REGISTRY

from safeship.idempotency import IdempotencyStoreError, aonce, first_time, once
from tests.idempotency.conftest import sql_engine


def _duplicates() -> float:
    value = REGISTRY.get_sample_value("safeship_idempotency_duplicates_total", {"surface": "once"})
    return value or 0.0


def test_redis_claims_once_and_counts_the_duplicates(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key, scope = str(uuid.uuid4()), f"whatsapp-{uuid.uuid4().hex}"
    before = _duplicates()
    try:
        assert once(client, key, ttl=60, scope=scope)
        assert not once(client, key, ttl=60, scope=scope)
        assert not once(client, key, ttl=60, scope=scope)
        assert once(client, key, ttl=60, scope=scope + "-other")
    finally:
        client.close()
    assert _duplicates() - before == 2


async def test_one_hundred_concurrent_async_claims_on_redis_have_one_winner(
    redis_url: str,
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    key = str(uuid.uuid4())
    try:
        results = await asyncio.gather(*(aonce(client, key, ttl=60) for _ in range(100)))
    finally:
        await client.aclose()
    assert results.count(True) == 1


async def test_a_redis_claim_expires_by_the_servers_ttl(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    key = str(uuid.uuid4())
    try:
        assert await aonce(client, key, ttl=0.2)
        assert not await aonce(client, key, ttl=0.2)
        await asyncio.sleep(0.4)
        assert await aonce(client, key, ttl=0.2)
    finally:
        await client.aclose()


async def test_first_time_gives_a_redis_claim_back_when_the_effect_raised(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    key = str(uuid.uuid4())
    try:
        with pytest.raises(RuntimeError):  # noqa: PT012 -- the block is the effect that fails
            async with first_time(client, key, ttl=60) as first:
                assert first
                raise RuntimeError("send failed")
        async with first_time(client, key, ttl=60) as first:
            assert first  # the redelivery acts
        async with first_time(client, key, ttl=60) as first:
            assert not first
    finally:
        await client.aclose()


def test_a_store_that_is_down_fails_closed_unless_told_to_fail_open() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(IdempotencyStoreError, match="nothing ran"):
        once(dead, "k", ttl=60)
    assert once(dead, "k", ttl=60, on_store_error="open")
    dead.close()
    assert REGISTRY.get_sample_value("safeship_idempotency_store_errors_total", {"surface": "once"})


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Any:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else sqlite_url
    engine = sql_engine(url)
    yield engine
    engine.dispose()


def test_a_sql_claim_rolls_back_with_the_callers_transaction(engine: sa.Engine) -> None:
    key = str(uuid.uuid4())
    with engine.connect() as conn:
        with conn.begin() as tx:
            assert once(conn, key, ttl=60)
            tx.rollback()  # the effect failed: so did the claim
        with conn.begin():
            assert once(conn, key, ttl=60)
        with conn.begin():
            assert not once(conn, key, ttl=60)


def test_a_sql_claim_expires_by_the_databases_clock(engine: sa.Engine) -> None:
    import time

    key = str(uuid.uuid4())
    with engine.begin() as conn:
        assert once(conn, key, ttl=0.2)
    time.sleep(0.4)
    with engine.begin() as conn:
        assert once(conn, key, ttl=60)
        assert not once(conn, key, ttl=60)


def test_concurrent_sql_transactions_claim_one_key_once(engine: sa.Engine) -> None:
    key, results, lock = str(uuid.uuid4()), [], threading.Lock()
    start = threading.Barrier(20)

    def claim() -> None:
        start.wait()
        with engine.begin() as conn:
            first = once(conn, key, ttl=60)
        with lock:
            results.append(first)

    threads = [threading.Thread(target=claim) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and len(results) == 20


async def test_aonce_joins_an_async_postgres_transaction(postgres_url: str) -> None:
    from safeship.db._engine import create_async_engine

    sql_engine(postgres_url).dispose()
    engine = create_async_engine(postgres_url)
    key = str(uuid.uuid4())
    try:
        async with engine.connect() as conn:
            async with conn.begin() as tx:
                assert await aonce(conn, key, ttl=60)
                await tx.rollback()
            async with conn.begin():
                assert await aonce(conn, key, ttl=60)
                assert not await aonce(conn, key, ttl=60)
    finally:
        await engine.dispose()


def test_wrong_kinds_and_bad_input_are_refused(redis_url: str) -> None:
    async_client, client = redis.asyncio.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    with pytest.raises(TypeError, match="aonce"):
        once(async_client, "k", ttl=60)
    with pytest.raises(TypeError, match="redis client or a SQLAlchemy"):
        once(object(), "k", ttl=60)
    with pytest.raises(ValueError, match="ttl"):
        once(client, "k", ttl=0)
    with pytest.raises(ValueError, match="key"):
        once(client, "", ttl=1)
    client.close()
