"""``stage()`` / ``astage()``: write an event into the outbox inside the caller's transaction.

The caller's connection or session is used as is (never a second connection), so the event
commits or rolls back with the business change.  Payloads are serialized here, so a bad one
fails at the call site rather than in the relay.  Sync and async connections each have their
own function (``stage``/``stage_many`` and ``astage``/``astage_many``) over one core that
validates and builds the rows: each refuses the other kind of connection at once, so a
forgotten ``await`` can never stage nothing.
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from safeship.db._connections import checked_async, checked_sync, connection_kind
from safeship.errors import SafeshipError
from safeship.outbox._model import partition_of, uuid7
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

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session, scoped_session

    #: What :func:`stage` and :func:`stage_many` take.
    SyncConnection: TypeAlias = (
        sa.Connection | Session | scoped_session[Any] | psycopg.Connection[Any] | sqlite3.Connection
    )
    #: What :func:`astage` and :func:`astage_many` take (asyncpg ships no types: ``Any``).
    AsyncConnectionLike: TypeAlias = (
        AsyncConnection | AsyncSession | psycopg.AsyncConnection[Any] | Any
    )

__all__ = [
    "NewEvent",
    "OutboxConnectionError",
    "astage",
    "astage_many",
    "stage",
    "stage_many",
]

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
#: A DB-API ``sqlite3`` connection (Django's ORM on SQLite): the rows SQLAlchemy would write.
_SQLITE3 = f"INSERT INTO safeship_outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant SQL
_SQLITE_TIME = (
    sa.DateTime(timezone=True).dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
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


class OutboxConnectionError(SafeshipError, TypeError):
    """The connection given cannot stage events through this function.

    ``stage``/``stage_many`` take sync connections and ``astage``/``astage_many`` async
    ones; the message says which to call instead, or which connection types are supported.
    """


_SUPPORTED = (
    "a SQLAlchemy Connection/Session (stage) or AsyncConnection/AsyncSession (astage), a "
    "psycopg 3 Connection (stage) / AsyncConnection (astage), asyncpg connection (astage) "
    "or sqlite3 Connection (stage)"
)


def _kind(conn: Any) -> str:
    """Which API ``conn`` speaks: sa, sa-async, psycopg, psycopg-async, asyncpg or sqlite3."""
    if isinstance(conn, sqlite3.Connection):
        return "sqlite3"
    kind = connection_kind(conn)
    if kind is None:
        raise OutboxConnectionError(
            f"conn: cannot stage through a {type(conn).__name__}; it must be {_SUPPORTED}"
        )
    return kind


def _sync_kind(conn: Any, function: str) -> str:
    """The kind of a sync connection; an async one is refused before anything runs."""
    kind = _kind(conn)
    return kind if kind == "sqlite3" else checked_sync(kind, conn, function, OutboxConnectionError)


def _async_kind(conn: Any, function: str) -> str:
    """The kind of an async connection; a sync one is refused before anything runs."""
    kind = _kind(conn)
    if kind == "sqlite3":
        raise OutboxConnectionError(
            f"conn: a{function}() takes an async connection, got the sync sqlite3 "
            f"Connection; use `{function}(conn, ...)` (no await) instead"
        )
    return checked_async(kind, conn, function, OutboxConnectionError)


def _one_row(
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None,
    max_event_bytes: int,
) -> tuple[Any, ...]:
    """Validate one event and build its row (id first); raises before anything is written."""
    payload_json, headers_json = _encode(
        aggregate_type, aggregate_id, type, payload, headers, max_event_bytes
    )
    return (
        uuid7(),
        aggregate_type,
        aggregate_id,
        type,
        payload_json,
        headers_json,
        partition_of(aggregate_id),
        datetime.now(UTC),
    )


def _many_rows(events: Iterable[NewEvent], function: str) -> list[tuple[Any, ...]]:
    """The rows of already validated events, in order; anything else is refused."""
    batch = list(events)
    for event in batch:
        if not isinstance(event, NewEvent):
            raise TypeError(f"{function} takes NewEvent items, got {type(event).__name__}")
    now = datetime.now(UTC)
    return [event.row(now) for event in batch]


def stage(
    conn: SyncConnection,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> uuid.UUID:
    """Stage one event in ``conn``'s current transaction and return its id.

    ``conn`` is a sync SQLAlchemy ``Connection``/``Session``, a psycopg 3 ``Connection`` or
    a DB-API ``sqlite3.Connection`` (Django's ORM on SQLite);
    an async one raises :class:`OutboxConnectionError` at once (use :func:`astage`), so
    a missing ``await`` can never leave an event unstaged.  An event that breaks a rule
    of :mod:`safeship.outbox.encoding` (not JSON, invalid Unicode, NUL, too deep, bad
    headers, over ``max_event_bytes``) raises :class:`OutboxPayloadError` before
    anything is written.
    """
    kind = _sync_kind(conn, "stage")
    row = _one_row(aggregate_type, aggregate_id, type, payload, headers, max_event_bytes)
    _write_sync(conn, kind, (row,))
    return row[0]  # type: ignore[no-any-return]


async def astage(
    conn: AsyncConnectionLike,
    *,
    aggregate_type: str,
    aggregate_id: str,
    type: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> uuid.UUID:
    """:func:`stage` for async connections: ``event_id = await astage(conn, ...)``.

    ``conn`` is a SQLAlchemy ``AsyncConnection``/``AsyncSession``, a psycopg 3
    ``AsyncConnection`` or an asyncpg connection; a sync one raises
    :class:`OutboxConnectionError` (use :func:`stage`).  Same checks, same rows.
    """
    kind = _async_kind(conn, "stage")
    row = _one_row(aggregate_type, aggregate_id, type, payload, headers, max_event_bytes)
    await _write_async(conn, kind, (row,))
    return row[0]  # type: ignore[no-any-return]


def stage_many(conn: SyncConnection, events: Iterable[NewEvent]) -> list[uuid.UUID]:
    """Stage many events in one statement (``unnest``, or ``COPY`` for large batches on
    PostgreSQL) and return their ids in order.  Sync connections only, as :func:`stage`."""
    kind = _sync_kind(conn, "stage_many")
    rows = _many_rows(events, "stage_many")
    _write_sync(conn, kind, rows)
    return [row[0] for row in rows]


async def astage_many(conn: AsyncConnectionLike, events: Iterable[NewEvent]) -> list[uuid.UUID]:
    """:func:`stage_many` for async connections: ``ids = await astage_many(conn, events)``."""
    kind = _async_kind(conn, "stage_many")
    rows = _many_rows(events, "astage_many")
    await _write_async(conn, kind, rows)
    return [row[0] for row in rows]


def _write_sync(conn: Any, kind: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if kind == "sa":
        _stage_sa(conn, rows)
    elif kind == "sqlite3":
        conn.executemany(_SQLITE3, [_sqlite3_params(row) for row in rows])
    else:
        _stage_psycopg(conn, rows)


def _sqlite3_params(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as SQLAlchemy stores it on SQLite (id as hex, its DATETIME text)."""
    assert _SQLITE_TIME is not None
    return (row[0].hex, *row[1:7], _SQLITE_TIME(row[7]))


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


async def _write_async(conn: Any, kind: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
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
