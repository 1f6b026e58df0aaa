"""The SQL key store (PostgreSQL, SQLite): one row per key in ``safeship_idempotency``.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired RETURNING``: a free
or expired key is taken in one statement, a live one is left alone and read back.  Every
time is the database's clock in milliseconds, so app servers' clocks never decide expiry.
The same statements run in the caller's transaction for :func:`record_response` (the
response commits with the business write) and for the ``once`` primitive.
"""

from __future__ import annotations

import asyncio
import functools
import json
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from safeship.idempotency import _schema as schema
from safeship.idempotency._errors import IdempotencyStoreError
from safeship.idempotency._model import Claim, Record, State, StoredResponse
from safeship.idempotency._store import UNKNOWN_TTL, fail_waiting, new_token, to_ms

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SqlStore", "complete_statement", "now_ms"]

T = TypeVar("T")
t = schema.idempotency

_NOW = {
    "postgresql": "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}


def now_ms(dialect: str) -> sa.ColumnElement[int]:
    """The database's clock, in milliseconds since the epoch, as a SQL expression."""
    try:
        return sa.literal_column(_NOW[dialect], sa.BigInteger())
    except KeyError:
        raise ValueError(
            f"idempotency keys support postgresql and sqlite, not {dialect!r}"
        ) from None


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


B = sa.bindparam
_IN_FLIGHT, _DONE, _UNKNOWN = State.IN_FLIGHT.value, State.DONE.value, State.UNKNOWN.value
Statement = tuple[Any, dict[str, Any]]


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """Every statement of the store, built once per dialect with bound parameters (so a
    request pays for executing them, never for building them)."""
    now = now_ms(dialect)
    big = sa.BigInteger()
    values: dict[str, Any] = {
        "key": B("p_key"),
        "fingerprint": B("p_fingerprint"),
        "state": B("p_state"),
        "token": B("p_token"),
        "lease_until": now + B("p_lease_ms", type_=big),
        "expires_at": now + B("p_ttl_ms", type_=big),
        "created_at": now,
        "status": None,
        "headers": None,
        "body": None,
        "body_kept": None,
    }
    insert = _insert(dialect)(t).values(values)
    update = {name: insert.excluded[name] for name in values if name != "key"}
    ours = (t.c.key == B("p_key"), t.c.token == B("p_token"), t.c.state == _IN_FLIGHT)
    held = now + B("p_lease_ms", type_=big) + B("p_unknown_ms", type_=big)
    free = sa.or_(t.c.state == _UNKNOWN, sa.and_(t.c.state == _IN_FLIGHT, t.c.lease_until <= now))
    return {
        "claim": insert.on_conflict_do_update(
            index_elements=[t.c.key], set_=update, where=t.c.expires_at <= now
        ).returning(t.c.token),
        "complete": sa.update(t)
        .where(*ours)
        .values(
            state=_DONE,
            token=None,
            lease_until=None,
            expires_at=now + B("p_ttl_ms", type_=big),
            status=B("p_status"),
            headers=B("p_headers", type_=t.c.headers.type),
            body=B("p_body", type_=t.c.body.type),
            body_kept=B("p_body_kept"),
        ),
        "renew": sa.update(t)
        .where(*ours)
        .values(lease_until=now + B("p_lease_ms", type_=big), expires_at=held),
        "unknown": sa.update(t)
        .where(*ours)
        .values(
            state=_UNKNOWN,
            token=None,
            lease_until=None,
            expires_at=now + B("p_unknown_ms", type_=big),
        ),
        "release": sa.delete(t).where(t.c.key == B("p_key"), t.c.token == B("p_token")),
        "take_over": sa.update(t)
        .where(t.c.key == B("p_key"), t.c.expires_at > now, free)
        .values(
            state=_IN_FLIGHT,
            token=B("p_token"),
            lease_until=now + B("p_lease_ms", type_=big),
            expires_at=held,
        ),
        "get": sa.select(t, now.label("now")).where(t.c.key == B("p_key")),
        "prune": sa.delete(t).where(t.c.expires_at <= now),
    }


def claim_statement(
    dialect: str, key: str, fingerprint: str, token: str, lease_ms: int | None, ttl_ms: int
) -> Statement:
    """Insert the key in flight (or, with ``lease_ms=None``, done at once), taking it over
    only when the stored one has expired; RETURNING yields a row when the caller owns it."""
    params = {
        "p_key": key,
        "p_fingerprint": fingerprint,
        "p_state": _IN_FLIGHT if lease_ms is not None else _DONE,
        "p_token": token,
        "p_lease_ms": lease_ms,  # NULL: now() + NULL is NULL, no lease
        "p_ttl_ms": ttl_ms,
    }
    return _statements(dialect)["claim"], params


def complete_statement(
    dialect: str, key: str, token: str, response: StoredResponse, ttl_ms: int
) -> Statement:
    """Store ``response`` for the claim ``token`` holds (0 rows when it no longer does)."""
    params = {
        "p_key": key,
        "p_token": token,
        "p_ttl_ms": ttl_ms,
        "p_status": response.status,
        "p_headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.headers],
        "p_body": response.body,
        "p_body_kept": response.body_kept,
    }
    return _statements(dialect)["complete"], params


def _live_record(row: Any) -> Record | None:
    if row is None or row.expires_at <= row.now:
        return None
    return _record(row, row.now)


def _record(row: Any, now: int) -> Record:
    state = State(row.state)
    retry_after = None
    if state is State.IN_FLIGHT:
        if row.lease_until is not None and row.lease_until > now:
            retry_after = (row.lease_until - now) / 1000
        else:
            state = State.UNKNOWN  # its owner stopped renewing: crashed or cut off
    response = None
    if state is State.DONE and row.status is not None:
        response = StoredResponse(
            status=row.status,
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in row.headers or []),
            body=bytes(row.body or b""),
            body_kept=bool(row.body_kept),
        )
    return Record(state, row.fingerprint, response, retry_after)


DriverSql = dict[str, tuple[str, tuple[str, ...], dict[str, Any]]]


def _driver_statements(dialect: sa.Dialect) -> DriverSql:
    """Every statement compiled once by the engine's (asyncpg) dialect: its SQL, the order
    of its positional parameters and the values of those the statement fixes itself."""
    compiled = {name: st.compile(dialect=dialect) for name, st in _statements("postgresql").items()}
    return {
        name: (str(c), tuple(c.positiontup or ()), dict(c.params)) for name, c in compiled.items()
    }


def _driver_args(sqls: DriverSql, name: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    sql, order, fixed = sqls[name]
    args = []
    for param in order:
        if param.startswith("p_"):
            value = params[param]  # a parameter of ours left out is a bug, never a NULL
            args.append(json.dumps(value) if param == "p_headers" else value)
        else:
            args.append(fixed[param])
    return sql, args


def _driver_row(row: Any) -> Any:
    """An asyncpg row as the attribute row `_record` reads (JSON comes back as text)."""
    fields = dict(row)
    if isinstance(fields.get("headers"), str):
        fields["headers"] = json.loads(fields["headers"])
    return types.SimpleNamespace(**fields)


_TABLE = "safeship_idempotency"
_PG_NOW = _NOW["postgresql"]
#: Many claims in one statement (and one commit): the rows come from arrays, one element
#: per caller; RETURNING names the keys whose callers now own them.
_CLAIM_MANY = f"""
INSERT INTO {_TABLE} AS t (key, fingerprint, state, token, lease_until, expires_at,
    created_at, status, headers, body, body_kept)
SELECT v.key, v.fingerprint, v.state, v.token, {_PG_NOW} + v.lease_ms, {_PG_NOW} + v.ttl_ms,
    {_PG_NOW}, NULL, NULL, NULL, NULL
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bigint[],
    $6::bigint[]) AS v(key, fingerprint, state, token, lease_ms, ttl_ms)
ORDER BY v.key
ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, state = excluded.state,
    token = excluded.token, lease_until = excluded.lease_until,
    expires_at = excluded.expires_at, created_at = excluded.created_at, status = NULL,
    headers = NULL, body = NULL, body_kept = NULL
WHERE t.expires_at <= {_PG_NOW}
RETURNING t.key"""  # noqa: S608 - constant SQL
_GET_MANY = f"SELECT *, {_PG_NOW} AS now FROM {_TABLE} WHERE key = ANY($1::varchar[])"  # noqa: S608 - constant SQL
#: Many completes in one statement: each row changes only while its caller's token holds it.
_COMPLETE_MANY = f"""
UPDATE {_TABLE} AS t SET state = '{_DONE}', token = NULL, lease_until = NULL,
    expires_at = {_PG_NOW} + v.ttl_ms, status = v.status, headers = v.headers::json,
    body = v.body, body_kept = v.body_kept
FROM unnest($1::varchar[], $2::varchar[], $3::bigint[], $4::int[], $5::text[], $6::bytea[],
    $7::bool[]) AS v(key, token, ttl_ms, status, headers, body, body_kept)
WHERE t.key = v.key AND t.token = v.token AND t.state = '{_IN_FLIGHT}'
RETURNING t.key"""  # noqa: S608 - constant SQL


_COMPLETE_ITEM = ("p_key", "p_token", "p_ttl_ms", "p_status", "p_headers", "p_body", "p_body_kept")


class _Turn:
    """The claims (or completes) asked for in one event-loop turn, sent as one statement.

    Concurrent requests then share a round trip and a commit (PostgreSQL flushes its WAL
    once per commit, so one commit of sixteen claims costs about what one claim does).
    Each caller still learns its own key's outcome: the statement returns the keys it
    took or changed.  A batch never holds one key twice (a later duplicate waits for the
    next statement), and a statement that fails for a reason other than the store being
    down (a deadlock with another server's batch, a value the database refuses) is run
    again one caller at a time, so each caller gets the answer it would have had alone.
    """

    def __init__(
        self,
        many: Callable[[Any, list[tuple[Any, ...]]], Awaitable[list[Any]]],
        one: Callable[[Any, tuple[Any, ...]], Awaitable[Any]],
        on_driver: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[None]],
    ) -> None:
        self._many, self._one, self._on_driver = many, one, on_driver
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, item: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:  # the first call of this turn sends the turn's batch
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        import asyncpg

        batch = [entry for entry in batch if not entry[1].done()]  # callers gone: not sent
        if not batch:
            return
        rounds: list[list[tuple[tuple[Any, ...], asyncio.Future[Any]]]] = []
        for entry in batch:  # item[0] is the key: one key at most once per statement
            for group in rounds:
                if all(other[0][0] != entry[0][0] for other in group):
                    group.append(entry)
                    break
            else:
                rounds.append([entry])

        async def work(conn: Any) -> None:
            for group in rounds:
                items = [item for item, _ in group]
                try:
                    answers = await self._many(conn, items) if len(items) > 1 else None
                except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                    raise
                except asyncpg.PostgresError:
                    answers = None  # each caller alone below, with its own outcome
                for item, future in group:
                    if answers is None:
                        try:
                            answer = await self._one(conn, item)
                        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                            raise
                        except Exception as exc:  # noqa: BLE001 -- handed to its caller
                            if not future.done():
                                future.set_exception(exc)
                            continue
                    else:
                        answer = answers.pop(0)
                    if not future.done():  # its caller was cancelled; the call itself ran
                        future.set_result(answer)

        try:
            await self._on_driver(work)
        except BaseException as exc:  # every caller still waiting learns it (store down)
            fail_waiting((future for _, future in batch), exc)
            if not isinstance(exc, Exception):
                raise


def read_record(conn: sa.Connection, key: str) -> Record | None:
    """What ``key`` holds now on ``conn``, or None when it is free or expired."""
    return _live_record(conn.execute(_statements(conn.dialect.name)["get"], {"p_key": key}).first())


class SqlStore:
    """Keys in safeship's ``safeship_idempotency`` table, through a SQLAlchemy engine
    (sync, or an ``AsyncEngine`` such as asyncpg's, which needs no worker thread).

    Each call is one statement in autocommit mode (atomic alone); with a sync engine it
    runs in a worker thread so the event loop never waits on the database.  The engine's
    pool bounds how many run at once.  On asyncpg the same statements, compiled once,
    go straight to the pooled driver connection (no per-call compile, parameter or
    result processing: most of a call's cost otherwise).
    """

    def __init__(self, engine: sa.Engine | AsyncEngine) -> None:
        now_ms(engine.dialect.name)  # refuses an unsupported database at construction
        self.engine = engine
        self.dialect = engine.dialect.name
        self._async = type(engine).__module__.startswith("sqlalchemy.ext.asyncio")
        self._autocommit: Any = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._driver = self._async and engine.dialect.driver == "asyncpg"
        self._sql = _driver_statements(engine.dialect) if self._driver else {}
        self._claims = _Turn(self._claim_many, self._claim_one, self._on_driver)
        self._completes = _Turn(self._complete_many, self._complete_one, self._on_driver)

    # The asyncpg path's claims and completes, one caller's (item) or a turn's (items).
    # A claim item is (key, fingerprint, state, token, lease_ms, ttl_ms) and its answer a
    # Claim; a complete item is (key, token, ttl_ms, status, headers JSON, body, body_kept)
    # and its answer whether the caller's token still held the key.

    async def _claim_one(self, conn: Any, item: tuple[Any, ...]) -> Claim:
        key, fingerprint, state, token, lease_ms, ttl_ms = item
        params = {
            "p_key": key,
            "p_fingerprint": fingerprint,
            "p_state": state,
            "p_token": token,
            "p_lease_ms": lease_ms,
            "p_ttl_ms": ttl_ms,
        }
        sql, args = _driver_args(self._sql, "claim", params)
        if await conn.fetchrow(sql, *args) is not None:
            return Claim(token)
        get_sql, get_args = _driver_args(self._sql, "get", {"p_key": key})
        row = await conn.fetchrow(get_sql, *get_args)
        return Claim(None, None if row is None else _live_record(_driver_row(row)))

    async def _claim_many(self, conn: Any, items: list[tuple[Any, ...]]) -> list[Claim]:
        columns = [list(column) for column in zip(*items, strict=True)]
        taken = {row["key"] for row in await conn.fetch(_CLAIM_MANY, *columns)}
        held = [item[0] for item in items if item[0] not in taken]
        found = {}
        if held:  # the keys someone else holds: read back, as a lone claim does
            found = {row["key"]: row for row in await conn.fetch(_GET_MANY, held)}
        answers = []
        for key, _, _, token, _, _ in items:
            if key in taken:
                answers.append(Claim(token))
            else:
                row = found.get(key)
                answers.append(Claim(None, None if row is None else _live_record(_driver_row(row))))
        return answers

    async def _complete_one(self, conn: Any, item: tuple[Any, ...]) -> bool:
        key, token, ttl_ms, status, headers, body, body_kept = item
        params = {
            "p_key": key,
            "p_token": token,
            "p_ttl_ms": ttl_ms,
            "p_status": status,
            "p_headers": headers,
            "p_body": body,
            "p_body_kept": body_kept,
        }
        sql, args = _driver_args(self._sql, "complete", params)
        return str(await conn.execute(sql, *args)).rsplit(" ", 1)[-1] == "1"

    async def _complete_many(self, conn: Any, items: list[tuple[Any, ...]]) -> list[bool]:
        columns = [list(column) for column in zip(*items, strict=True)]
        columns[4] = [json.dumps(headers) for headers in columns[4]]
        changed = {row["key"] for row in await conn.fetch(_COMPLETE_MANY, *columns)}
        return [item[0] in changed for item in items]

    async def _on_driver(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``await work(asyncpg connection)`` on a connection of the engine's pool."""
        import asyncpg

        try:  # any failure to get a connection (refused, "too many clients") is store down
            conn = await self._autocommit.connect().start()
        except (sa.exc.DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise IdempotencyStoreError(f"the SQL key store did not answer: {exc}") from exc
        try:
            raw = await conn.get_raw_connection()
            return await work(raw.driver_connection)
        except (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            OSError,
        ) as exc:
            raise IdempotencyStoreError(f"the SQL key store did not answer: {exc}") from exc
        finally:
            await conn.close()

    async def _change(self, name: str, **params: Any) -> bool:
        """Run change ``name``; True when it changed exactly the one row it names."""
        if self._driver:
            sql, args = _driver_args(self._sql, name, params)
            status = await self._on_driver(lambda conn: conn.execute(sql, *args))
            return str(status).rsplit(" ", 1)[-1] == "1"  # "UPDATE 1", "DELETE 0"
        statement = _statements(self.dialect)[name]
        return await self._run(lambda conn: conn.execute(statement, params).rowcount == 1)

    async def _run(self, work: Callable[[sa.Connection], T]) -> T:
        if self._async:  # an AsyncEngine (asyncpg): the same statements, no thread
            try:
                async with self._autocommit.connect() as conn:
                    result: T = await conn.run_sync(work)
                    return result
            except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
                raise IdempotencyStoreError(f"the SQL key store did not answer: {exc}") from exc
        import anyio.to_thread

        return await anyio.to_thread.run_sync(functools.partial(self._in_transaction, work))

    def _in_transaction(self, work: Callable[[sa.Connection], T]) -> T:
        # Every change is one statement, atomic alone: autocommit saves BEGIN and COMMIT
        # round trips (a claim's read-back after a conflict is a plain read).
        try:
            with self._autocommit.connect() as conn:
                return work(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise IdempotencyStoreError(f"the SQL key store did not answer: {exc}") from exc

    async def claim(
        self,
        key: str,
        fingerprint: str,
        *,
        lease: float,
        ttl: float,
        unknown_ttl: float = UNKNOWN_TTL,
    ) -> Claim:
        token = new_token()
        lease_ms, unknown_ms = to_ms(lease, "lease"), to_ms(unknown_ttl, "unknown_ttl")
        to_ms(ttl, "ttl")  # checked here; it applies once the response is stored
        statement, params = claim_statement(
            self.dialect, key, fingerprint, token, lease_ms, lease_ms + unknown_ms
        )
        if self._driver:  # with the other claims of this loop turn, in one statement
            claim: Claim = await self._claims(
                (key, fingerprint, params["p_state"], token, lease_ms, params["p_ttl_ms"])
            )
            return claim

        def work(conn: sa.Connection) -> Claim:
            if conn.execute(statement, params).first() is not None:
                return Claim(token)
            return Claim(None, read_record(conn, key))

        return await self._run(work)

    async def renew(
        self, key: str, token: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> bool:
        lease_ms, unknown_ms = to_ms(lease, "lease"), to_ms(unknown_ttl, "unknown_ttl")
        return await self._change(
            "renew", p_key=key, p_token=token, p_lease_ms=lease_ms, p_unknown_ms=unknown_ms
        )

    async def complete(self, key: str, token: str, response: StoredResponse, *, ttl: float) -> bool:
        _, params = complete_statement(self.dialect, key, token, response, to_ms(ttl, "ttl"))
        if self._driver:  # with the other completes of this loop turn, in one statement
            done: bool = await self._completes(tuple(params[name] for name in _COMPLETE_ITEM))
            return done
        return await self._change("complete", **params)

    async def mark_unknown(self, key: str, token: str, *, unknown_ttl: float = UNKNOWN_TTL) -> bool:
        unknown_ms = to_ms(unknown_ttl, "unknown_ttl")
        return await self._change("unknown", p_key=key, p_token=token, p_unknown_ms=unknown_ms)

    async def release(self, key: str, token: str) -> bool:
        return await self._change("release", p_key=key, p_token=token)

    async def take_over(
        self, key: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> str | None:
        token, lease_ms = new_token(), to_ms(lease, "lease")
        unknown_ms = to_ms(unknown_ttl, "unknown_ttl")
        taken = await self._change(
            "take_over", p_key=key, p_token=token, p_lease_ms=lease_ms, p_unknown_ms=unknown_ms
        )
        return token if taken else None

    async def get(self, key: str) -> Record | None:
        if self._driver:
            sql, args = _driver_args(self._sql, "get", {"p_key": key})
            row = await self._on_driver(lambda conn: conn.fetchrow(sql, *args))
            return None if row is None else _live_record(_driver_row(row))
        return await self._run(lambda conn: read_record(conn, key))

    async def prune(self) -> int:
        """Delete expired keys (run it now and then; expired keys are already ignored)."""
        if self._driver:
            sql, args = _driver_args(self._sql, "prune", {})
            status = await self._on_driver(lambda conn: conn.execute(sql, *args))
            return int(str(status).rsplit(" ", 1)[-1])
        statement = _statements(self.dialect)["prune"]
        return await self._run(lambda conn: int(conn.execute(statement).rowcount))
