"""stage() and stage_many() (and their async twins astage(), astage_many()) refuse what a
store or a sink cannot carry with one error, OutboxPayloadError naming the problem, before
anything is written, the same on SQLite and PostgreSQL, sync and async."""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.outbox import NewEvent, OutboxPayloadError, astage, astage_many, stage, stage_many
from safeship.outbox.encoding import DEFAULT_MAX_EVENT_BYTES

KEYS: dict[str, Any] = {"aggregate_type": "order", "aggregate_id": "o-1", "type": "created"}


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# (name, arguments over KEYS, what the message must say)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("lone surrogate in payload", {"payload": {"x": "\ud800"}}, "payload is not valid Unicode"),
    ("lone surrogate in a key", {"aggregate_id": "a\udc00"}, "aggregate_id is not valid Unicode"),
    ("deep nesting", {"payload": nested(100_000)}, "nested too deeply"),
    ("NUL in a payload string", {"payload": {"x": "a\x00b"}}, "NUL"),
    ("NUL in a payload key", {"payload": {"a\x00": 1}}, "NUL"),
    ("NUL in aggregate_id", {"aggregate_id": "a\x00"}, "aggregate_id contains a NUL"),
    ("NUL in type", {"type": "t\x00"}, "type contains a NUL"),
    ("NaN", {"payload": {"x": float("nan")}}, "no NaN or Infinity"),
    ("Infinity", {"payload": [float("inf")]}, "no NaN or Infinity"),
    ("a Decimal", {"payload": {"x": decimal.Decimal("1.5")}}, "JSON-serializable"),
    ("an object", {"payload": object()}, "JSON-serializable"),
    ("a long aggregate_type", {"aggregate_type": "t" * 256}, "aggregate_type must be"),
    ("a long type", {"type": "t" * 256}, "type must be"),
    ("an empty aggregate_id", {"aggregate_id": ""}, "aggregate_id must be"),
    ("a header that is not text", {"headers": {"x": 1}}, "must map str to str"),
    ("a header name with a space", {"headers": {"a b": "x"}}, "header name"),
    ("a header value with CR LF", {"headers": {"x": "a\r\nEvil: 1"}}, "control character"),
    ("a header value with NUL", {"headers": {"x": "a\x00"}}, "control character"),
    ("a long header value", {"headers": {"x": "v" * 8193}}, "at most 8192"),
    ("too many headers", {"headers": {f"h{i}": "v" for i in range(65)}}, "at most 64"),
    ("headers not a mapping", {"headers": ["x"]}, "mapping"),
    ("a payload over the cap", {"payload": "x" * DEFAULT_MAX_EVENT_BYTES}, "byte cap"),
    (
        "headers that push it over the cap",
        {
            "payload": "x" * (DEFAULT_MAX_EVENT_BYTES - 20_000),
            "headers": {f"h{i}": "v" * 8000 for i in range(3)},
        },
        "byte cap",
    ),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[sa.Engine]:
    from safeship.db import create_engine, upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/outbox.db"
    else:
        url = request.getfixturevalue("pg_url")
    created = create_engine(url)
    upgrade(created)
    yield created
    created.dispose()


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_outbox")).scalar_one())


def _call(arguments: dict[str, Any]) -> dict[str, Any]:
    return {**KEYS, "payload": None, **arguments}


def test_stage_refuses_each_case_with_one_error_and_writes_nothing(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for name, arguments, says in REFUSED:
            with pytest.raises(OutboxPayloadError, match=says):
                stage(conn, **_call(arguments))
            with pytest.raises(OutboxPayloadError, match=says):
                stage_many(conn, [NewEvent(**KEYS, payload=1), NewEvent(**_call(arguments))])
            stage(conn, **KEYS, payload={"after": name})  # the transaction is still usable
    assert _count(engine) == len(REFUSED)


@pytest.mark.postgres
async def test_async_stage_refuses_each_case_before_anything_is_sent(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    import asyncpg
    import psycopg
    from sqlalchemy.ext.asyncio import create_async_engine

    from safeship.outbox._store_pg import asyncpg_dsn

    async_engine = create_async_engine(pg_url.replace("+psycopg", "+asyncpg"))
    raw = await asyncpg.connect(asyncpg_dsn(pg_url))
    aconn = await psycopg.AsyncConnection.connect(asyncpg_dsn(pg_url))
    try:
        async with async_engine.begin() as conn, raw.transaction(), aconn.transaction():
            for name, arguments, says in REFUSED:
                for target in (conn, raw, aconn):
                    with pytest.raises(OutboxPayloadError, match=says):
                        await astage(target, **_call(arguments))
                await astage(conn, **KEYS, payload={"after": name})
                await astage_many(raw, [NewEvent(**KEYS, payload={"after": name})])
    finally:
        await async_engine.dispose()
        await raw.close()
        await aconn.close()
    assert _count(pg_engine) == 2 * len(REFUSED)


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("an escaped backslash-u0000 is text, not NUL", {"payload": {"x": "\\u0000"}}),
    ("non-ASCII text", {"payload": {"x": "Grüße 🚀"}, "aggregate_id": "ключ"}),
    ("nesting Python can encode", {"payload": nested(500)}),
    ("a large int", {"payload": 10**40}),
    ("headers of token names", {"headers": {"traceparent": "00-ab-01", "X-Tenant_1": "t é"}}),
]


@pytest.mark.parametrize(("name", "arguments"), ACCEPTED, ids=[n for n, _ in ACCEPTED])
def test_what_one_store_takes_the_other_takes_too(
    engine: sa.Engine, name: str, arguments: dict[str, Any]
) -> None:
    with engine.begin() as conn:
        stage(conn, **_call(arguments))
    assert _count(engine) == 1


def test_the_size_cap_can_be_raised_per_call_and_is_validated(engine: sa.Engine) -> None:
    big = {"blob": "x" * 2_000_000}
    with engine.begin() as conn:
        with pytest.raises(OutboxPayloadError, match="1000000-byte cap"):
            stage(conn, **KEYS, payload=big)
        event_id = stage(conn, **KEYS, payload=big, max_event_bytes=3_000_000)
        stage_many(conn, [NewEvent(**KEYS, payload=big, max_event_bytes=3_000_000)])
        with pytest.raises(ValueError, match="max_event_bytes"):
            stage(conn, **KEYS, payload=1, max_event_bytes=0)
    assert isinstance(event_id, uuid.UUID) and _count(engine) == 2
