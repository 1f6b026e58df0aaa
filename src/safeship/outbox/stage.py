"""``stage()``: write an event into the outbox inside the caller's own transaction.

The caller's connection or session is used as is (never a second connection), so the event
commits or rolls back with the business change.  Payloads are serialized here, so a bad one
fails at the call site rather than in the relay.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

import sqlalchemy as sa

from safeship.outbox.encoding import (
    DEFAULT_MAX_EVENT_BYTES,
    OutboxPayloadError,
    check_headers,
    check_key,
    check_max_event_bytes,
    check_size,
    encode_json,
    event_size,
)
from safeship.outbox.model import partition_of, uuid7

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["NewEvent", "stage", "stage_many"]

_COLUMNS = "id, aggregatetype, aggregateid, type, payload, headers, partition, created_at"
_PG_SA = sa.text(
    f"INSERT INTO safeship_outbox ({_COLUMNS}) VALUES (:id, :aggregatetype, :aggregateid, "  # noqa: S608 - constant SQL
    ":type, CAST(:payload AS jsonb), CAST(:headers AS jsonb), :partition, :created_at)"
)
_SQLITE_SA = sa.text(
    f"INSERT INTO safeship_outbox ({_COLUMNS}) VALUES (:id, :aggregatetype, :aggregateid, "  # noqa: S608 - constant SQL
    ":type, :payload, :headers, :partition, :created_at)"
).bindparams(sa.bindparam("created_at", type_=sa.DateTime(timezone=True)))
_PG_UNNEST = (
    f"INSERT INTO safeship_outbox ({_COLUMNS}) SELECT u.i, u.at, u.ai, u.t, u.p::jsonb, "  # noqa: S608 - constant SQL
    "u.h::jsonb, u.part, u.c FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], "
    "{}::text[], {}::text[], {}::smallint[], {}::timestamptz[]) AS u(i, at, ai, t, p, h, part, c)"
)
_PSYCOPG_ONE = (
    f"INSERT INTO safeship_outbox ({_COLUMNS}) "  # noqa: S608 - constant SQL
    "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)"
)
_ASYNCPG_ONE = (
    f"INSERT INTO safeship_outbox ({_COLUMNS}) "  # noqa: S608 - constant SQL
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """One event for :func:`stage_many`; validated and serialized at construction, so a
    bad one raises :class:`OutboxPayloadError` before anything is written."""

    aggregate_type: str
    aggregate_id: str
    type: str
    payload: Any
    headers: Mapping[str, str] | None = None
    id: uuid.UUID = field(default_factory=uuid7)
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    _payload_json: str = field(init=False, repr=False)
    _headers_json: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        payload_json, headers_json = _encode(
            self.aggregate_type,
            self.aggregate_id,
            self.type,
            self.payload,
            self.headers,
            self.max_event_bytes,
        )
        object.__setattr__(self, "_payload_json", payload_json)
        object.__setattr__(self, "_headers_json", headers_json)

    def row(self, now: datetime) -> tuple[Any, ...]:
        """Column values in insert order."""
        return (
            self.id,
            self.aggregate_type,
            self.aggregate_id,
            self.type,
            self._payload_json,
            self._headers_json,
            partition_of(self.aggregate_id),
            now,
        )


def _trace_headers() -> dict[str, str]:
    """The current W3C trace context, when OpenTelemetry is in use in this process."""
    if "opentelemetry" not in sys.modules:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


def _merged_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = _trace_headers()
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise OutboxPayloadError(
                f"outbox headers must be a mapping of str to str, got {type(headers).__name__}"
            )
        check_headers(headers)
        merged.update(headers)
    return merged


def _encode(
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None,
    max_event_bytes: int,
) -> tuple[str, str | None]:
    """Validate one event and return its payload and headers as JSON text."""
    check_max_event_bytes(max_event_bytes)
    for name, value in (("aggregate_type", aggregate_type), ("aggregate_id", aggregate_id)):
        check_key(name, value)
    check_key("type", type)
    payload_json = encode_json(payload, field="payload")
    merged = _merged_headers(headers)
    size = event_size(payload_json, merged, aggregate_type, aggregate_id, type)
    check_size(size, max_event_bytes)
    return payload_json, (encode_json(merged, field="headers") if merged else None)


_NAMES = ("id", "aggregatetype", "aggregateid", "type", "payload", "headers", "partition")


def _sa_params(row: tuple[Any, ...], sqlite: bool) -> dict[str, Any]:
    params = dict(zip(_NAMES, row, strict=False))
    params["created_at"] = row[7]
    if sqlite:
        params["id"] = row[0].hex
    return params


def _dialect(conn: Any) -> str:
    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
    return str(bind.dialect.name)


def _kind(conn: Any) -> str:
    """Which API ``conn`` speaks: sa, sa-async, psycopg, psycopg-async or asyncpg."""
    if isinstance(conn, sa.Connection):
        return "sa"
    module = type(conn).__module__
    if module.startswith("sqlalchemy.ext.asyncio"):
        return "sa-async"
    if module.startswith("sqlalchemy.orm"):
        return "sa"
    if module.startswith("psycopg"):
        return "psycopg-async" if hasattr(conn, "__aenter__") else "psycopg"
    if module.startswith("asyncpg"):
        return "asyncpg"
    raise TypeError(
        "stage() needs a SQLAlchemy Connection/Session/AsyncConnection/AsyncSession or a "
        f"psycopg 3 / asyncpg connection, got {type(conn).__name__}"
    )


@overload
def stage(
    conn: sa.Connection | Session,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> uuid.UUID: ...
@overload
def stage(
    conn: AsyncConnection | AsyncSession,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Coroutine[Any, Any, uuid.UUID]: ...
@overload
def stage(
    conn: Any,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Any: ...
def stage(
    conn: Any,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Any:
    """Stage one event in ``conn``'s current transaction and return its id.

    Sync connections and sessions return the id; async ones (SQLAlchemy async, psycopg
    ``AsyncConnection``, asyncpg) return an awaitable: ``event_id = await stage(...)``.
    An event that breaks a rule of :mod:`safeship.outbox.encoding` (not JSON, invalid
    Unicode, NUL, too deep, bad headers, over ``max_event_bytes``) raises
    :class:`OutboxPayloadError` before anything is written.
    """
    payload_json, headers_json = _encode(
        aggregate_type, aggregate_id, type, payload, headers, max_event_bytes
    )
    event_id = uuid7()
    row = (
        event_id,
        aggregate_type,
        aggregate_id,
        type,
        payload_json,
        headers_json,
        partition_of(aggregate_id),
        datetime.now(UTC),
    )
    kind = _kind(conn)
    if kind == "sa":
        _stage_sa(conn, (row,))
        return event_id
    if kind == "psycopg":
        conn.execute(_PSYCOPG_ONE, row)
        return event_id
    return _one(_stage_async(conn, kind, (row,), [event_id]))


async def _one(pending: Coroutine[Any, Any, list[uuid.UUID]]) -> uuid.UUID:
    return (await pending)[0]


def stage_many(conn: Any, events: Iterable[NewEvent]) -> Any:
    """Stage many events in one statement (``unnest`` on PostgreSQL); return their ids.

    Same rules as :func:`stage`: a list for sync connections, an awaitable for async ones.
    """
    batch = list(events)
    for event in batch:
        if not isinstance(event, NewEvent):
            raise TypeError(f"stage_many takes NewEvent items, got {type(event).__name__}")
    now = datetime.now(UTC)
    rows = [event.row(now) for event in batch]
    ids = [event.id for event in batch]
    kind = _kind(conn)
    if kind == "sa":
        _stage_sa(conn, rows)
        return ids
    if kind == "psycopg":
        _stage_psycopg(conn, rows)
        return ids
    return _stage_async(conn, kind, rows, ids)


def _stage_sa(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if _dialect(conn) == "sqlite":
        conn.execute(_SQLITE_SA, [_sa_params(row, True) for row in rows])
    elif len(rows) == 1:
        conn.execute(_PG_SA, _sa_params(rows[0], False))
    elif len(rows) >= COPY_THRESHOLD and _psycopg_of(conn) is not None:
        _copy_psycopg(_psycopg_of(conn), rows)
    else:
        conn.execute(_PG_SA_BULK, _columns_params(rows))


#: From this many events on, ``stage_many`` uses COPY where the driver allows it.
COPY_THRESHOLD = 64
_COPY = f"COPY safeship_outbox ({_COLUMNS}) FROM STDIN"
_COPY_COLUMNS = ["id", "aggregatetype", "aggregateid", "type", "payload", "headers"]
_COPY_COLUMNS += ["partition", "created_at"]


def _psycopg_of(conn: Any) -> Any:
    """The psycopg 3 connection under a SQLAlchemy Connection or Session, if that is the driver."""
    sa_conn = conn.connection() if hasattr(conn, "get_bind") else conn
    raw = sa_conn.connection.dbapi_connection
    return raw if type(raw).__module__.startswith("psycopg") else None


def _copy_psycopg(raw: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row(row)


def _stage_psycopg(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    if len(rows) >= COPY_THRESHOLD:
        _copy_psycopg(conn, rows)
    elif rows:
        conn.execute(*_psycopg_statement(rows))


async def _stage_async(
    conn: Any, kind: str, rows: Sequence[tuple[Any, ...]], ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    if not rows:
        return ids
    if kind == "sa-async":
        await conn.run_sync(_stage_sa_sync, rows)
    elif kind == "psycopg-async":
        await conn.execute(*_psycopg_statement(rows))
    elif len(rows) >= COPY_THRESHOLD:
        await conn.copy_records_to_table("safeship_outbox", records=rows, columns=_COPY_COLUMNS)
    elif len(rows) == 1:
        await conn.execute(_ASYNCPG_ONE, *rows[0])
    else:
        await conn.execute(_PG_UNNEST.format(*(f"${i}" for i in range(1, 9))), *_columns(rows))
    return ids


def _stage_sa_sync(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    _stage_sa(conn, rows)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _columns_params(rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    return {f"c{i}": column for i, column in enumerate(_columns(rows))}


def _psycopg_statement(rows: Sequence[tuple[Any, ...]]) -> tuple[str, Any]:
    if len(rows) == 1:
        return _PSYCOPG_ONE, rows[0]
    return _PG_UNNEST.format(*(["%s"] * 8)), _columns(rows)


_PG_SA_BULK = sa.text(
    f"INSERT INTO safeship_outbox ({_COLUMNS}) SELECT u.i, u.at, u.ai, u.t, CAST(u.p AS jsonb), "  # noqa: S608 - constant SQL
    "CAST(u.h AS jsonb), u.part, u.c FROM unnest(CAST(:c0 AS uuid[]), CAST(:c1 AS text[]), "
    "CAST(:c2 AS text[]), CAST(:c3 AS text[]), CAST(:c4 AS text[]), CAST(:c5 AS text[]), "
    "CAST(:c6 AS smallint[]), CAST(:c7 AS timestamptz[])) AS u(i, at, ai, t, p, h, part, c)"
)
