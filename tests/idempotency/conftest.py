"""Fixtures: the same key store on real Redis, PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import create_engine
from safeship.idempotency import RedisStore, SqlStore, Store
from safeship.idempotency._schema import idempotency

STORES = ["redis", "postgres", "postgres-asyncpg", "sqlite"]


def sql_engine(url: str) -> sa.Engine:
    engine = create_engine(url)
    idempotency.create(engine, checkfirst=True)
    return engine


@pytest.fixture
async def made() -> AsyncIterator[list[RedisStore]]:
    """The Redis stores a test made: their connections of the test's loop are closed
    after it."""
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        await store.aclose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'idem.db'}"


@contextlib.asynccontextmanager
async def open_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh store of ``kind`` (a unique Redis prefix, a fresh database)."""
    if kind == "redis":
        import redis.asyncio

        url: str = request.getfixturevalue("redis_url")
        client = redis.asyncio.Redis.from_url(url)
        store = RedisStore(client, prefix=f"test:idem:{uuid.uuid4().hex}:")
        yield store
        await store.aclose()
        await client.aclose()
        return
    if kind == "postgres-asyncpg":
        from safeship.db._engine import create_async_engine

        url = request.getfixturevalue("postgres_url")
        sql_engine(url).dispose()
        async_engine = create_async_engine(url)
        yield SqlStore(async_engine)
        await async_engine.dispose()
        return
    url = (
        request.getfixturevalue("postgres_url")
        if kind == "postgres"
        else f"sqlite:///{tmp_path / 'idem.db'}"
    )
    engine = sql_engine(url)
    yield SqlStore(engine)
    engine.dispose()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The same store on real Redis, PostgreSQL (psycopg in a thread, asyncpg) and SQLite."""
    async with open_store(request.param, request, tmp_path) as opened:
        yield opened
