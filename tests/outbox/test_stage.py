"""stage()/stage_many() (sync) and astage()/astage_many() (async) on every supported
connection type, inside the caller's transaction: committed events are visible, rolled-back
ones are not; each refuses the other kind of connection before anything is written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from safeship.errors import SafeshipError
from safeship.outbox import (
    NewEvent,
    OutboxConnectionError,
    OutboxPayloadError,
    astage,
    astage_many,
    stage,
    stage_many,
)
from safeship.outbox._store_pg import asyncpg_dsn

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
        stage(object(), **ARGS, payload=1)  # type: ignore[arg-type]


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
        await astage(conn, **ARGS, payload=1)
        await astage_many(conn, [NewEvent(**ARGS, payload=2), NewEvent(**ARGS, payload=3)])
    async with AsyncSession(engine) as session, session.begin():
        await astage(session, **ARGS, payload=4)
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
        await astage(aconn, **ARGS, payload=4)
    conn2 = await asyncpg.connect(dsn)
    async with conn2.transaction():
        await astage(conn2, **ARGS, payload=5)
        await astage_many(conn2, [NewEvent(**ARGS, payload=6), NewEvent(**ARGS, payload=7)])
    await conn2.close()
    assert [r.payload for r in _rows(pg_engine)] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.postgres
async def test_stage_many_uses_copy_for_large_batches_on_every_postgres_driver(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg
    import psycopg

    from safeship.outbox._stage import COPY_THRESHOLD

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
        ids = await astage_many(conn2, [NewEvent(**ARGS, payload={"i": i}) for i in range(size)])
    await conn2.close()
    rows = _rows(pg_engine)
    assert len(rows) == 4 * size and len(ids) == size
    assert [r.payload["i"] for r in rows] == list(range(size)) * 4
    assert rows[0].headers == {"h": "v"}


@pytest.mark.postgres
async def test_async_stage_returns_the_event_id(pg_url: str, pg_engine: sa.Engine) -> None:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    event_id = await astage(conn, **ARGS, payload=1)
    await conn.close()
    assert isinstance(event_id, uuid.UUID)
    assert uuid.UUID(str(_rows(pg_engine)[0].id)) == event_id


def test_astage_given_a_sync_connection_says_use_stage_and_writes_nothing(
    sqlite_engine: sa.Engine,
) -> None:
    async def misuse(conn: Any) -> None:
        with pytest.raises(OutboxConnectionError, match=r"use `stage\(conn"):
            await astage(conn, **ARGS, payload=1)
        with pytest.raises(OutboxConnectionError, match=r"use `stage_many\(conn"):
            await astage_many(conn, [NewEvent(**ARGS, payload=2)])

    import asyncio

    with sqlite_engine.begin() as conn:
        asyncio.run(misuse(conn))
    with Session(sqlite_engine) as session, session.begin():
        asyncio.run(misuse(session))
    assert _rows(sqlite_engine) == []


def test_a_connection_of_the_wrong_kind_is_a_safeship_error_and_a_type_error() -> None:
    assert issubclass(OutboxConnectionError, SafeshipError)
    assert issubclass(OutboxConnectionError, TypeError)
    with pytest.raises(OutboxConnectionError, match="cannot stage through a object"):
        stage_many(object(), [])  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_sync_stage_given_an_async_connection_raises_at_once_and_stages_nothing(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    """A forgotten ``await`` cannot happen: ``stage`` never returns an awaitable."""
    import asyncpg
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(pg_url.replace("+psycopg", "+asyncpg"))
    raw = await asyncpg.connect(asyncpg_dsn(pg_url))
    aconn = await psycopg.AsyncConnection.connect(asyncpg_dsn(pg_url))
    try:
        async with engine.begin() as conn, AsyncSession(engine) as session:
            for target in (conn, session, raw, aconn):
                with pytest.raises(OutboxConnectionError, match=r"use `await astage\(conn"):
                    stage(target, **ARGS, payload=1)  # type: ignore[arg-type]
                with pytest.raises(OutboxConnectionError, match=r"use `await astage_many\("):
                    stage_many(target, [NewEvent(**ARGS, payload=2)])  # type: ignore[arg-type]
        await aconn.commit()
    finally:
        await engine.dispose()
        await raw.close()
        await aconn.close()
    assert _rows(pg_engine) == []


def _comparable(engine: sa.Engine) -> list[tuple[object, ...]]:
    """The rows without what differs by design between two stagings (id, time, order)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT aggregatetype, aggregateid, type, payload, headers, partition, attempts "
                "FROM safeship_outbox ORDER BY seq"
            )
        )
        return [tuple(row) for row in rows]


def _events() -> list[NewEvent]:
    return [
        NewEvent(**{**ARGS, "aggregate_id": f"o-{i}"}, payload={"i": i}, headers={"h": "v"})
        for i in range(3)
    ]


def _taken(engine: sa.Engine) -> list[tuple[object, ...]]:
    """The comparable rows, then an empty outbox for the next driver."""
    rows = _comparable(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM safeship_outbox"))
    return rows


@pytest.mark.postgres
async def test_stage_and_astage_write_the_same_rows_on_every_driver(
    pg_url: str, pg_engine: sa.Engine, sqlite_engine: sa.Engine
) -> None:
    import asyncpg
    import psycopg
    from sqlalchemy.ext.asyncio import create_async_engine

    one = {**ARGS, "payload": {"total": 1}, "headers": {"tenant": "t1"}}
    with sqlite_engine.begin() as conn:
        stage(conn, **one)
        stage_many(conn, _events())
    expected = _comparable(sqlite_engine)
    written: dict[str, list[tuple[object, ...]]] = {}
    with pg_engine.begin() as conn:
        stage(conn, **one)
        stage_many(conn, _events())
    written["sqlalchemy"] = _taken(pg_engine)
    with psycopg.connect(asyncpg_dsn(pg_url)) as raw:
        stage(raw, **one)
        stage_many(raw, _events())
    written["psycopg"] = _taken(pg_engine)
    async_engine = create_async_engine(pg_url.replace("+psycopg", "+asyncpg"))
    async with async_engine.begin() as aconn:
        await astage(aconn, **one)
        await astage_many(aconn, _events())
    await async_engine.dispose()
    written["sqlalchemy async"] = _taken(pg_engine)
    async with await psycopg.AsyncConnection.connect(asyncpg_dsn(pg_url)) as apsycopg:
        await astage(apsycopg, **one)
        await astage_many(apsycopg, _events())
    written["psycopg async"] = _taken(pg_engine)
    conn2 = await asyncpg.connect(asyncpg_dsn(pg_url))
    async with conn2.transaction():
        await astage(conn2, **one)
        await astage_many(conn2, _events())
    await conn2.close()
    written["asyncpg"] = _comparable(pg_engine)
    assert len(expected) == 4
    decoded = [tuple(_json(v) for v in row) for row in expected]
    assert written == dict.fromkeys(written, decoded)


def _json(value: object) -> object:
    """SQLite keeps JSON as text; PostgreSQL gives it back decoded."""
    import json

    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value
