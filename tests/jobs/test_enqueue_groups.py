"""Rows of different tasks, queues and options in one write go in as several statements,
each row with its own values and its id returned in input order (cron writes such mixes)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from safeship.jobs._enqueue import Row, write_async, write_sync
from safeship.jobs._model import uuid7

pytestmark = pytest.mark.postgres


def _mixed() -> list[Row]:
    shapes = [("a", "q1", 0, 3, 0.0), ("a", "q1", 0, 3, 0.0), ("b", "q2", 5, 1, 0.0),
              ("a", "q1", 0, 3, 60.0), ("a", "q1", 0, 3, 0.0)]  # fmt: skip
    return [
        Row(uuid7(), task, queue, {"n": n}, priority, attempts, None, delay)
        for n, (task, queue, priority, attempts, delay) in enumerate(shapes)
    ]


def _stored(pg_engine: sa.Engine, rows: list[Row]) -> None:
    with pg_engine.connect() as conn:
        found = {
            r.id: r
            for r in conn.execute(
                sa.text(
                    "SELECT id, task, queue, priority, max_attempts, args->>'n' AS n, "
                    "run_at > now() + interval '30 seconds' AS later FROM safeship_jobs"
                )
            )
        }
    for n, row in enumerate(rows):
        got = found[row.id]
        assert (got.task, got.queue, got.priority, got.max_attempts, got.n) == (
            row.task, row.queue, row.priority, row.max_attempts, str(n)
        )  # fmt: skip
        assert got.later is (row.delay > 0)


def test_mixed_rows_through_psycopg(pg_url: str, pg_engine: sa.Engine) -> None:
    import psycopg

    rows = _mixed()
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as conn:
        assert write_sync(conn, "psycopg", rows) == [r.id for r in rows]
    _stored(pg_engine, rows)


async def test_mixed_rows_through_asyncpg(pg_url: str, pg_engine: sa.Engine) -> None:
    import asyncpg

    rows = _mixed()
    conn = await asyncpg.connect(pg_url.replace("postgresql+psycopg", "postgresql"))
    try:
        async with conn.transaction():
            assert await write_async(conn, "asyncpg", rows) == [r.id for r in rows]
    finally:
        await conn.close()
    _stored(pg_engine, rows)
