"""stage() and stage_many() on every supported connection type, inside the caller's
transaction: committed events are visible, rolled-back ones are not."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from safeship.outbox import NewEvent, OutboxPayloadError, stage, stage_many
from safeship.outbox.store_pg import asyncpg_dsn

ARGS: dict[str, Any] = {"aggregate_type": "order", "aggregate_id": "o-1", "type": "created"}


def _rows(engine: sa.Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT id, aggregatetype, aggregateid, type, payload, headers, attempts "
                    "FROM safeship_outbox ORDER BY seq"
                )
            )
        )


def test_stage_on_sqlite_connection_commits_with_the_transaction(sqlite_engine: sa.Engine) -> None:
    with sqlite_engine.begin() as conn:
        event_id = stage(conn, **ARGS, payload={"total": 12.5}, headers={"tenant": "t1"})
    rows = _rows(sqlite_engine)
    assert len(rows) == 1
    assert uuid.UUID(str(rows[0].id)) == event_id
    assert rows[0].aggregateid == "o-1" and rows[0].attempts == 0


def test_rolled_back_transaction_stages_nothing(sqlite_engine: sa.Engine) -> None:
    def business_transaction() -> None:
        with sqlite_engine.begin() as conn:
            stage(conn, **ARGS, payload={})
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        business_transaction()
    assert _rows(sqlite_engine) == []


def test_stage_on_orm_session(sqlite_engine: sa.Engine) -> None:
    with Session(sqlite_engine) as session, session.begin():
        stage(session, **ARGS, payload=[1, 2])
    assert len(_rows(sqlite_engine)) == 1


def test_unserializable_payload_fails_at_stage_and_writes_nothing(
    sqlite_engine: sa.Engine,
) -> None:
    with sqlite_engine.begin() as conn, pytest.raises(OutboxPayloadError):
        stage(conn, **ARGS, payload={"when": object()})
    assert _rows(sqlite_engine) == []


def test_stage_rejects_unknown_connection_types() -> None:
    with pytest.raises(TypeError, match="SQLAlchemy"):
        stage(object(), **ARGS, payload=1)


def test_stage_many_keeps_order_on_sqlite(sqlite_engine: sa.Engine) -> None:
    events = [NewEvent(**ARGS, payload=i) for i in range(5)]
    with sqlite_engine.begin() as conn:
        ids = stage_many(conn, events)
    assert ids == [e.id for e in events]
    assert [uuid.UUID(str(r.id)) for r in _rows(sqlite_engine)] == ids


def test_traceparent_is_carried_from_the_current_span(sqlite_engine: sa.Engine) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("checkout"), sqlite_engine.begin() as conn:
        stage(conn, **ARGS, payload=1)
        span = trace.get_current_span().get_span_context()
    headers = _rows(sqlite_engine)[0].headers
    assert f"{span.trace_id:032x}" in str(headers)


@pytest.mark.postgres
def test_stage_on_postgres_sync_connection_and_bulk(pg_engine: sa.Engine) -> None:
    with pg_engine.begin() as conn:
        stage(
            conn,
            **ARGS,
            payload={"n": 1},
            headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        )
        stage_many(conn, [NewEvent(**ARGS, payload={"n": i}) for i in range(2, 6)])
    rows = _rows(pg_engine)
    assert [r.payload["n"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].headers["traceparent"].startswith("00-")


@pytest.mark.postgres
async def test_stage_on_sqlalchemy_async_session_and_connection(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(pg_url.replace("+psycopg", "+asyncpg"))
    async with engine.begin() as conn:
        await stage(conn, **ARGS, payload=1)
        await stage_many(conn, [NewEvent(**ARGS, payload=2), NewEvent(**ARGS, payload=3)])
    async with AsyncSession(engine) as session, session.begin():
        await stage(session, **ARGS, payload=4)
    await engine.dispose()
    assert [r.payload for r in _rows(pg_engine)] == [1, 2, 3, 4]


@pytest.mark.postgres
async def test_stage_on_plain_psycopg_and_asyncpg(pg_url: str, pg_engine: sa.Engine) -> None:
    import asyncpg
    import psycopg

    dsn = asyncpg_dsn(pg_url)
    with psycopg.connect(dsn) as conn:
        stage(conn, **ARGS, payload=1)
        stage_many(conn, [NewEvent(**ARGS, payload=2)] * 1 + [NewEvent(**ARGS, payload=3)])
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        await stage(aconn, **ARGS, payload=4)
    conn2 = await asyncpg.connect(dsn)
    async with conn2.transaction():
        await stage(conn2, **ARGS, payload=5)
        await stage_many(conn2, [NewEvent(**ARGS, payload=6), NewEvent(**ARGS, payload=7)])
    await conn2.close()
    assert [r.payload for r in _rows(pg_engine)] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.postgres
async def test_stage_many_uses_copy_for_large_batches_on_every_postgres_driver(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg
    import psycopg

    from safeship.outbox.stage import COPY_THRESHOLD

    size = COPY_THRESHOLD + 1
    batch = [NewEvent(**ARGS, payload={"i": i}, headers={"h": "v"}) for i in range(size)]
    with pg_engine.begin() as conn:
        stage_many(conn, batch)
    with Session(pg_engine) as session, session.begin():
        stage_many(session, batch[:0] + [NewEvent(**ARGS, payload={"i": i}) for i in range(size)])
    with psycopg.connect(asyncpg_dsn(pg_url)) as raw:
        stage_many(raw, [NewEvent(**ARGS, payload={"i": i}) for i in range(size)])
    conn2 = await asyncpg.connect(asyncpg_dsn(pg_url))
    async with conn2.transaction():
        ids = await stage_many(conn2, [NewEvent(**ARGS, payload={"i": i}) for i in range(size)])
    await conn2.close()
    rows = _rows(pg_engine)
    assert len(rows) == 4 * size and len(ids) == size
    assert [r.payload["i"] for r in rows] == list(range(size)) * 4
    assert rows[0].headers == {"h": "v"}


@pytest.mark.postgres
async def test_async_stage_returns_the_event_id(pg_url: str, pg_engine: sa.Engine) -> None:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    event_id = await stage(conn, **ARGS, payload=1)
    await conn.close()
    assert isinstance(event_id, uuid.UUID)
    assert uuid.UUID(str(_rows(pg_engine)[0].id)) == event_id
