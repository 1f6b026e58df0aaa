"""Enqueue on a connection outside a transaction (asyncpg, autocommitting psycopg): a write
that takes several statements runs in a transaction of its own, so a failure in a later
statement leaves none of the batch behind; a one-statement write needs none."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from safeship.jobs import Jobs, _enqueue

pytestmark = pytest.mark.postgres

# Fails the insert of the job whose n is 20: in the second statement of the split batch.
_TRIGGER = """
CREATE FUNCTION refuse_twenty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.args->>'n' = '20' THEN RAISE EXCEPTION 'refused job 20'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_twenty BEFORE INSERT ON safeship_jobs
  FOR EACH ROW EXECUTE FUNCTION refuse_twenty();
"""


JOBS = Jobs()


@JOBS.task(name="pad")
def pad(ctx: Any, n: int, pad: str) -> None:
    return None


BATCH = [{"n": n, "pad": "x" * 20} for n in range(30)]


@pytest.fixture
def refusing(pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    monkeypatch.setattr(_enqueue, "_MAX_ARRAY_CHARS", 200)  # a few jobs per statement
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(_TRIGGER)
    return pg_engine


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar_one())


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_the_batch_takes_several_statements(refusing: sa.Engine) -> None:
    rows = JOBS.get("pad").rows(BATCH)
    assert len(_enqueue._statements("asyncpg", rows)) > 1


async def test_asyncpg_outside_a_transaction_writes_all_or_nothing(
    pg_url: str, refusing: sa.Engine
) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain(pg_url))
    try:
        with pytest.raises(asyncpg.RaiseError, match="refused job 20"):
            await JOBS.aenqueue_many(conn, "pad", BATCH)
        assert not conn.is_in_transaction()
        ids = await JOBS.aenqueue_many(conn, "pad", BATCH[:19])
    finally:
        await conn.close()
    assert len(ids) == 19 and count(refusing) == 19


def test_autocommitting_psycopg_writes_all_or_nothing(pg_url: str, refusing: sa.Engine) -> None:
    import psycopg

    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="refused job 20"):
            JOBS.enqueue_many(conn, "pad", BATCH)
        assert len(JOBS.enqueue_many(conn, "pad", BATCH[:19])) == 19
    assert count(refusing) == 19


async def test_autocommitting_async_psycopg_writes_all_or_nothing(
    pg_url: str, refusing: sa.Engine
) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="refused job 20"):
            await JOBS.aenqueue_many(conn, "pad", BATCH)
        assert len(await JOBS.aenqueue_many(conn, "pad", BATCH[:19])) == 19
    assert count(refusing) == 19


async def test_a_one_statement_batch_outside_a_transaction_is_written(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain(pg_url))
    try:
        ids = await JOBS.aenqueue_many(conn, "pad", BATCH)
        assert not conn.is_in_transaction()
    finally:
        await conn.close()
    with pg_engine.connect() as c:
        stored = c.execute(sa.text("SELECT id FROM safeship_jobs")).scalars().all()
    assert sorted(stored) == sorted(ids) and len(ids) == 30


async def test_a_unique_batch_outside_a_transaction_returns_the_existing_ids(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain(pg_url))
    try:
        first = await JOBS.aenqueue_many(conn, "pad", BATCH[:3], unique_key="k")
        again = await JOBS.aenqueue_many(conn, "pad", BATCH[:3], unique_key="k")
    finally:
        await conn.close()
    assert first == again and len(set(first)) == 1 and count(pg_engine) == 1
