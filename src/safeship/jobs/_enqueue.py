"""Write jobs inside the caller's transaction: ``write_sync`` / ``write_async``.

The caller's connection or session is used as is (never a second connection), so a job
exists if and only if the business write beside it commits.  Sync and async connections
each have their own entry point and each refuses the other kind at once, so a forgotten
``await`` can never enqueue nothing.  Many jobs go in one statement (``unnest`` on
PostgreSQL, the arguments as one JSON array).  Unique jobs: a row whose ``unique_key`` is
already pending or running is not inserted, and the existing job's id is returned in its
place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, NamedTuple

import sqlalchemy as sa

from safeship.db._connections import checked_async, checked_sync, connection_kind
from safeship.jobs._model import JobConnectionError, encode_args, encode_many

__all__ = ["Row", "sqlite_time", "write_async", "write_sync"]


class Row(NamedTuple):
    """One job to insert, in column order: it runs ``delay`` seconds after the database's
    now, or at ``run_at`` when the caller named that time (no earlier than now), so jobs
    given one ``run_at`` share it exactly.

    ``args`` is the job's arguments as a JSON-able value; the write encodes them (all the
    rows' before any statement runs, so a bad payload raises with nothing written)."""

    id: uuid.UUID
    task: str
    queue: str
    args: Any
    priority: int
    max_attempts: int
    unique_key: str | None
    delay: float
    run_at: datetime | None = None


_COLUMNS = "id, task, queue, args, priority, max_attempts, unique_key, state, created_at, run_at"
_ON_CONFLICT = " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"
_PG_ONE = (
    f"INSERT INTO safeship_jobs ({_COLUMNS}) VALUES ({{0}}, {{1}}, {{2}}, CAST({{3}} AS jsonb), "  # noqa: S608 - constant SQL
    "{4}, {5}, {8}, 'pending', now(), "
    "GREATEST(CAST({7} AS timestamptz), now() + CAST({6} AS float8) * interval '1 second'))"
)
# Many jobs of one task with the same options (what enqueue_many gives): the ids are an
# array, the arguments one JSON array (a single value to send and to parse, where a text
# array costs the driver and the server per element) and the unique keys an array only for
# unique jobs ({8}, absent otherwise); the rest is sent once.  ROWS FROM pairs the i-th id
# with the i-th arguments.
_PG_MANY = (
    f"INSERT INTO safeship_jobs ({_COLUMNS}) SELECT u.i, {{1}}, {{2}}, u.a, "  # noqa: S608 - constant SQL
    "CAST({4} AS smallint), CAST({5} AS int), {{keys}}, 'pending', now(), "
    "GREATEST(CAST({7} AS timestamptz), now() + CAST({6} AS float8) * interval '1 second') "
    "FROM ROWS FROM (unnest(CAST({0} AS "
    "uuid[])), jsonb_array_elements(CAST({3} AS jsonb)){{key_array}}) AS u(i, a{{key_name}})"
)
_PG_MANY_KEYS = (
    _PG_MANY.replace("{{keys}}", "u.k")
    .replace("{{key_array}}", ", unnest(CAST({8} AS text[]))")
    .replace("{{key_name}}", ", k")
)
_PG_MANY = _PG_MANY.replace("{{keys}}", "NULL").replace("{{key_array}}", "")
_PG_MANY = _PG_MANY.replace("{{key_name}}", "")
_SQLITE = sa.text(
    f"INSERT INTO safeship_jobs ({_COLUMNS}) VALUES (:id, :task, :queue, :args, :priority, "  # noqa: S608 - constant SQL
    ":max_attempts, :unique_key, 'pending', :created_at, :run_at)" + _ON_CONFLICT
)
_STYLES = {
    "sa": tuple(f":p{i}" for i in range(9)),
    # Named, because the many-rows statement uses its parameters out of order.
    "psycopg": tuple(f"%(p{i})s" for i in range(9)),
    "asyncpg": tuple(f"${i}" for i in range(1, 10)),
}


def _sql(style: str, many: bool, unique: bool) -> str:
    template = _PG_ONE if not many else _PG_MANY_KEYS if unique else _PG_MANY
    text = template.format(*_STYLES[style])
    return text + (_ON_CONFLICT + " RETURNING id" if unique else "")


def sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a timestamp on SQLite (UTC, naive ISO text), so text
    comparisons in SQL order times correctly."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def kind(conn: Any) -> str:
    """Which API ``conn`` speaks: sa, sa-async, psycopg, psycopg-async or asyncpg."""
    found = connection_kind(conn)
    if found is None:
        raise JobConnectionError(
            f"conn: cannot enqueue through a {type(conn).__name__}; give a SQLAlchemy "
            "Connection/Session, a psycopg 3 connection or (aenqueue) an asyncpg connection"
        )
    return found


def sync_kind(conn: Any, function: str) -> str:
    return checked_sync(kind(conn), conn, function, JobConnectionError)


def async_kind(conn: Any, function: str) -> str:
    return checked_async(kind(conn), conn, function, JobConnectionError)


def _dialect(conn: Any) -> str:
    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
    return str(bind.dialect.name)


def _params(style: str, rows: Sequence[Row], unique: bool, args: str | None) -> Any:
    """One row's values, or (for rows of one :func:`_groups` run) the id array, the
    arguments as one JSON array (``args``, already encoded) and (unique jobs only) the
    unique-key array beside the values they share; the placeholders' order of :func:`_sql`."""
    first = rows[0]
    values: list[Any]
    if args is None:
        values = [first.id, first.task, first.queue, encode_args(first.args)]
        values += [first.priority, first.max_attempts, first.delay, first.run_at]
        values += [first.unique_key]
    else:
        values = [[r.id for r in rows], first.task, first.queue]
        values += [args, first.priority, first.max_attempts]
        values += [first.delay, first.run_at]
        values += [[r.unique_key for r in rows]] if unique else []
    if style in ("sa", "psycopg"):
        return {f"p{i}": value for i, value in enumerate(values)}
    return list(values)


def _groups(rows: Sequence[Row]) -> list[Sequence[Row]]:
    """``rows`` split into runs sharing task, queue, priority, attempts and delay (one run
    for a batch of ``enqueue_many``), each written by one statement."""
    groups: list[Sequence[Row]] = []
    start = 0
    shared = list(map(_shared, rows))
    for index in range(1, len(rows) + 1):
        if index == len(rows) or shared[index] != shared[start]:
            groups.append(rows[start:index])
            start = index
    return groups


_shared = attrgetter("task", "queue", "priority", "max_attempts", "delay", "run_at")


def _resolved(
    rows: Sequence[Row], inserted: set[uuid.UUID], existing: dict[str, uuid.UUID]
) -> list[uuid.UUID]:
    if not existing:  # no unique key was taken: every row went in under its own id
        return [row.id for row in rows]
    ids = []
    for row in rows:
        if row.id in inserted or row.unique_key is None:
            ids.append(row.id)
        else:
            ids.append(existing[row.unique_key])
    return ids


def _dedupe(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """Rows to insert (one per unique key) and all rows, each repeat pointed at the first."""
    first: dict[str, Row] = {}
    unique: list[Row] = []
    every: list[Row] = []
    for row in rows:
        if row.unique_key is not None and row.unique_key in first:
            every.append(first[row.unique_key])
            continue
        if row.unique_key is not None:
            first[row.unique_key] = row
        unique.append(row)
        every.append(row)
    return unique, every


_LOOKUP = "SELECT id, unique_key FROM safeship_jobs WHERE unique_key = ANY({0})"
_LOOKUP_SQLITE = sa.text(
    "SELECT id, unique_key FROM safeship_jobs WHERE unique_key IN :keys"
).bindparams(sa.bindparam("keys", expanding=True))


def _one_statement(conn_kind: str, rows: Sequence[Row]) -> list[_Statement] | None:
    """The statements of a write that is a single statement with no unique key (atomic
    on its own, even on an autocommitting connection); None when it would take more."""
    if any(row.unique_key is not None for row in rows):
        return None
    statements = _statements(conn_kind, rows)
    return statements if len(statements) == 1 else None


def write_sync(conn: Any, conn_kind: str, rows: Sequence[Row]) -> list[uuid.UUID]:
    """Insert ``rows`` through a sync connection; the ids to report, in order.  On an
    autocommitting psycopg connection a write of several statements runs in a transaction
    of its own, so it is all or nothing there too."""
    if not rows:
        return []
    if conn_kind == "psycopg" and conn.autocommit and not _in_transaction_psycopg(conn):
        single = _one_statement(conn_kind, rows)
        if single is None:
            with conn.transaction():
                return _write_sync(conn, conn_kind, rows)
        _run_sync(conn, conn_kind, single[0])
        return [row.id for row in rows]
    return _write_sync(conn, conn_kind, rows)


def _in_transaction_psycopg(conn: Any) -> bool:
    from psycopg.pq import TransactionStatus

    return bool(conn.info.transaction_status != TransactionStatus.IDLE)


def _write_sync(conn: Any, conn_kind: str, rows: Sequence[Row]) -> list[uuid.UUID]:
    todo, every = _dedupe(rows)
    inserted: set[uuid.UUID] = set()
    existing: dict[str, uuid.UUID] = {}
    for _ in range(5):
        new, missing = _insert_sync(conn, conn_kind, todo)
        inserted |= new
        if missing:
            existing.update(_lookup_sync(conn, conn_kind, missing))
        todo = [r for r in todo if r.unique_key in missing and r.unique_key not in existing]
        if not todo:
            return _resolved(every, inserted, existing)
    raise JobConnectionError("enqueue: a unique key kept finishing between insert and lookup")


class _Statement(NamedTuple):
    """One statement of a write: its rows, SQL and encoded parameters."""

    rows: Sequence[Row]
    unique: bool
    sql: str
    params: Any


def _statements(conn_kind: str, rows: Sequence[Row]) -> list[_Statement]:
    """The PostgreSQL statements writing ``rows``, one per :func:`_groups` run, every one's
    parameters encoded before any runs (a bad payload raises with nothing written)."""
    style = {"sa": "sa", "asyncpg": "asyncpg"}.get(conn_kind, "psycopg")
    statements = []
    for group in _groups(rows):
        statements += _group_statements(style, group)
    return statements


# A jsonb value holds at most 255 MB, and decoded it can be several times its text (a small
# number is two characters of text but 12 bytes in jsonb, measured 6x): a run whose
# arguments are longer than this in JSON text goes in as several statements.
_MAX_ARRAY_CHARS = 8 * 1024 * 1024


def _group_statements(style: str, rows: Sequence[Row]) -> list[_Statement]:
    """The statements of one run: one, or halves of it until each's arguments fit."""
    unique = any(row.unique_key is not None for row in rows)
    if len(rows) == 1:
        return [
            _Statement(rows, unique, _sql(style, False, unique), _params(style, rows, unique, None))
        ]
    args = encode_many([row.args for row in rows])
    if len(args) > _MAX_ARRAY_CHARS:
        half = len(rows) // 2
        return _group_statements(style, rows[:half]) + _group_statements(style, rows[half:])
    return [_Statement(rows, unique, _sql(style, True, unique), _params(style, rows, unique, args))]


def _insert_sync(
    conn: Any, conn_kind: str, rows: Sequence[Row]
) -> tuple[set[uuid.UUID], list[str]]:
    if conn_kind == "sa" and _dialect(conn) == "sqlite":
        return _insert_sqlite(conn, rows)
    inserted: set[uuid.UUID] = set()
    missing: list[str] = []
    for statement in _statements(conn_kind, rows):
        new, lost = _run_sync(conn, conn_kind, statement)
        inserted |= new
        missing += lost
    return inserted, missing


def _insert_sqlite(conn: Any, rows: Sequence[Row]) -> tuple[set[uuid.UUID], list[str]]:
    now = datetime.now(UTC)
    params = [_sqlite_params(row, now) for row in rows]
    conn.execute(_SQLITE, params)
    if any(row.unique_key is not None for row in rows):
        return _inserted_sqlite(conn, rows)
    return set(), []


def _run_sync(conn: Any, conn_kind: str, statement: _Statement) -> tuple[set[uuid.UUID], list[str]]:
    unique = statement.unique
    if conn_kind == "sa":
        result = conn.execute(sa.text(statement.sql), statement.params)
        ids = {uuid.UUID(str(r[0])) for r in result} if unique else None
    else:
        cursor = conn.execute(statement.sql, statement.params)
        ids = {uuid.UUID(str(r[0])) for r in cursor.fetchall()} if unique else None
    return _split(statement.rows, ids)


def _split(rows: Sequence[Row], ids: set[uuid.UUID] | None) -> tuple[set[uuid.UUID], list[str]]:
    """The ids inserted under a unique key and the keys found taken (``ids`` None: rows
    without unique keys, all inserted, so none to report)."""
    if ids is None:
        return set(), []
    missing = [r.unique_key for r in rows if r.id not in ids and r.unique_key is not None]
    return ids, missing


def _inserted_sqlite(conn: Any, rows: Sequence[Row]) -> tuple[set[uuid.UUID], list[str]]:
    keys = [row.unique_key for row in rows if row.unique_key is not None]
    found = _lookup_sync(conn, "sa", keys)
    inserted = {r.id for r in rows if r.unique_key is None or found.get(r.unique_key) == r.id}
    missing = [r.unique_key for r in rows if r.unique_key is not None and r.id not in inserted]
    return inserted, missing


def _sqlite_params(row: Row, now: datetime) -> dict[str, Any]:
    params = row._asdict()
    params["id"] = row.id.hex
    params["args"] = encode_args(row.args)
    params["created_at"] = sqlite_time(now)
    at = now + timedelta(seconds=row.delay)
    params["run_at"] = sqlite_time(at if row.run_at is None else max(row.run_at, at))
    del params["delay"]
    return params


def _lookup_sync(conn: Any, conn_kind: str, keys: Sequence[str]) -> dict[str, uuid.UUID]:
    if conn_kind == "sa" and _dialect(conn) == "sqlite":
        result = conn.execute(_LOOKUP_SQLITE, {"keys": list(keys)})
    elif conn_kind == "sa":
        result = conn.execute(sa.text(_LOOKUP.format("CAST(:k AS text[])")), {"k": list(keys)})
    else:
        result = conn.execute(_LOOKUP.format("%s"), [list(keys)]).fetchall()
    return {str(key): uuid.UUID(str(value)) for value, key in result}


async def write_async(conn: Any, conn_kind: str, rows: Sequence[Row]) -> list[uuid.UUID]:
    """Insert ``rows`` through an async connection; the ids to report, in order.  Outside
    a transaction (asyncpg, autocommitting psycopg) a write of several statements runs in a
    transaction of its own, so it is all or nothing there too."""
    if not rows:
        return []
    if conn_kind == "sa-async":
        ids: list[uuid.UUID] = await conn.run_sync(_sa_sync, rows)
        return ids
    if _autocommitting_async(conn, conn_kind):
        single = _one_statement(conn_kind, rows)
        if single is None:
            async with conn.transaction():
                return await _write_async(conn, conn_kind, rows)
        await _run_async(conn, conn_kind, single[0])
        return [row.id for row in rows]
    return await _write_async(conn, conn_kind, rows)


def _autocommitting_async(conn: Any, conn_kind: str) -> bool:
    if conn_kind == "asyncpg":
        return not conn.is_in_transaction()
    return bool(conn.autocommit) and not _in_transaction_psycopg(conn)


async def _write_async(conn: Any, conn_kind: str, rows: Sequence[Row]) -> list[uuid.UUID]:
    todo, every = _dedupe(rows)
    inserted: set[uuid.UUID] = set()
    existing: dict[str, uuid.UUID] = {}
    for _ in range(5):
        new, missing = await _insert_async(conn, conn_kind, todo)
        inserted |= new
        if missing:
            existing.update(await _lookup_async(conn, conn_kind, missing))
        todo = [r for r in todo if r.unique_key in missing and r.unique_key not in existing]
        if not todo:
            return _resolved(every, inserted, existing)
    raise JobConnectionError("enqueue: a unique key kept finishing between insert and lookup")


def _sa_sync(conn: Any, rows: Sequence[Row]) -> list[uuid.UUID]:
    return write_sync(conn, "sa", rows)


async def _insert_async(
    conn: Any, conn_kind: str, rows: Sequence[Row]
) -> tuple[set[uuid.UUID], list[str]]:
    inserted: set[uuid.UUID] = set()
    missing: list[str] = []
    for statement in _statements(conn_kind, rows):
        new, lost = await _run_async(conn, conn_kind, statement)
        inserted |= new
        missing += lost
    return inserted, missing


async def _run_async(
    conn: Any, conn_kind: str, statement: _Statement
) -> tuple[set[uuid.UUID], list[str]]:
    rows, unique, sql, params = statement
    if conn_kind == "asyncpg":
        if unique:
            records = await conn.fetch(sql, *params)
            return _split(rows, {r[0] for r in records})
        await conn.execute(sql, *params)
        return _split(rows, None)
    cursor = await conn.execute(sql, params)
    if unique:
        return _split(rows, {uuid.UUID(str(r[0])) for r in await cursor.fetchall()})
    return _split(rows, None)


async def _lookup_async(conn: Any, conn_kind: str, keys: Sequence[str]) -> dict[str, uuid.UUID]:
    if conn_kind == "asyncpg":
        records = await conn.fetch(_LOOKUP.format("$1::text[]"), list(keys))
    else:
        cursor = await conn.execute(_LOOKUP.format("%s"), [list(keys)])
        records = await cursor.fetchall()
    return {str(key): uuid.UUID(str(value)) for value, key in records}
