"""Enqueue outside a transaction under concurrency: unique keys over a pool, a failed one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.jobs import Jobs

pytestmark = pytest.mark.postgres

JOBS = Jobs()


@JOBS.task(name="pad")
def pad(ctx: Any, n: int) -> None:
    return None


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar_one())


async def test_twenty_concurrent_asyncpg_unique_enqueues_get_one_id(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(plain(pg_url), min_size=1, max_size=5)
    try:

        async def one(i: int) -> Any:
            async with pool.acquire() as conn:
                return await JOBS.aenqueue_many(conn, "pad", [{"n": i}], unique_key="same")

        ids = await asyncio.gather(*(one(i) for i in range(20)))
    finally:
        await pool.close()
    assert len({i[0] for i in ids}) == 1
    assert count(pg_engine) == 1


async def test_twenty_concurrent_async_psycopg_autocommit_unique_multi_key(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import psycopg

    conns = [
        await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) for _ in range(5)
    ]
    try:

        async def one(i: int) -> Any:
            conn = conns[i % 5]
            return await JOBS.aenqueue_many(conn, "pad", [{"n": 1}, {"n": 2}], unique_key="k")

        # one connection is used by 4 callers: psycopg serialises them on its lock
        ids = await asyncio.gather(*(one(i) for i in range(20)))
    finally:
        for c in conns:
            await c.close()
    assert len({tuple(i) for i in ids}) == 1
    assert count(pg_engine) == 1  # one unique key for the whole batch


def test_psycopg_autocommit_in_failed_explicit_transaction_raises_cleanly(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import psycopg

    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InFailedSqlTransaction), conn.transaction():  # noqa: PT012
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            JOBS.enqueue_many(conn, "pad", [{"n": 1}, {"n": 2}], unique_key="k")
        # the connection is usable afterwards, and nothing was written
        assert JOBS.enqueue_many(conn, "pad", [{"n": 1}], unique_key="k")
    assert count(pg_engine) == 1
