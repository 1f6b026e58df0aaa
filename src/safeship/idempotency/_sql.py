"""The SQL key store (PostgreSQL, SQLite): one row per key in ``safeship_idempotency``.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired RETURNING``: a free
or expired key is taken in one statement, a live one is left alone and read back.  Every
time is the database's clock in milliseconds, so app servers' clocks never decide expiry.
The same statements run in the caller's transaction for :func:`record_response` (the
response commits with the business write) and for the ``once`` primitive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from safeship.idempotency import _schema as schema
from safeship.idempotency._errors import IdempotencyStoreError
from safeship.idempotency._model import Claim, Record, State, StoredResponse
from safeship.idempotency._store import new_token, to_ms

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


def claim_statement(
    dialect: str, key: str, fingerprint: str, token: str, lease_ms: int | None, ttl_ms: int
) -> Any:
    """Insert the key in flight (or, with ``lease_ms=None``, done at once), taking it over
    only when the stored one has expired; RETURNING yields a row when the caller owns it."""
    now = now_ms(dialect)
    values: dict[str, Any] = {
        "key": key,
        "fingerprint": fingerprint,
        "state": State.IN_FLIGHT.value if lease_ms is not None else State.DONE.value,
        "token": token,
        "lease_until": None if lease_ms is None else now + lease_ms,
        "expires_at": now + ttl_ms,
        "created_at": now,
        "status": None,
        "headers": None,
        "body": None,
        "body_kept": None,
    }
    insert = _insert(dialect)(t).values(values)
    update = {name: insert.excluded[name] for name in values if name != "key"}
    return insert.on_conflict_do_update(
        index_elements=[t.c.key], set_=update, where=t.c.expires_at <= now
    ).returning(t.c.token)


def complete_statement(
    dialect: str, key: str, token: str, response: StoredResponse, ttl_ms: int
) -> Any:
    """Store ``response`` for the claim ``token`` holds (0 rows when it no longer does)."""
    return (
        sa.update(t)
        .where(t.c.key == key, t.c.token == token, t.c.state == State.IN_FLIGHT.value)
        .values(
            state=State.DONE.value,
            token=None,
            lease_until=None,
            expires_at=now_ms(dialect) + ttl_ms,
            status=response.status,
            headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.headers],
            body=response.body,
            body_kept=response.body_kept,
        )
    )


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


def read_record(conn: sa.Connection, key: str) -> Record | None:
    """What ``key`` holds now on ``conn``, or None when it is free or expired."""
    now = now_ms(conn.dialect.name)
    row = conn.execute(sa.select(t, now.label("now")).where(t.c.key == key)).first()
    if row is None or row.expires_at <= row.now:
        return None
    return _record(row, row.now)


class SqlStore:
    """Keys in safeship's ``safeship_idempotency`` table, through a sync SQLAlchemy engine.

    Each call is one statement in autocommit mode (atomic alone), run in a worker thread
    so the event loop never waits on the database.  The engine's pool bounds how many run at once.
    """

    def __init__(self, engine: sa.Engine) -> None:
        now_ms(engine.dialect.name)  # refuses an unsupported database at construction
        self.engine = engine
        self.dialect = engine.dialect.name
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _run(self, work: Callable[[sa.Connection], T]) -> T:
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

    def _changed(self, statement: Any) -> Callable[[sa.Connection], bool]:
        return lambda conn: conn.execute(statement).rowcount == 1

    async def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float) -> Claim:
        token = new_token()
        statement = claim_statement(
            self.dialect, key, fingerprint, token, to_ms(lease, "lease"), to_ms(ttl, "ttl")
        )

        def work(conn: sa.Connection) -> Claim:
            if conn.execute(statement).first() is not None:
                return Claim(token)
            return Claim(None, read_record(conn, key))

        return await self._run(work)

    async def renew(self, key: str, token: str, *, lease: float) -> bool:
        statement = (
            sa.update(t)
            .where(t.c.key == key, t.c.token == token, t.c.state == State.IN_FLIGHT.value)
            .values(lease_until=now_ms(self.dialect) + to_ms(lease, "lease"))
        )
        return await self._run(self._changed(statement))

    async def complete(self, key: str, token: str, response: StoredResponse, *, ttl: float) -> bool:
        statement = complete_statement(self.dialect, key, token, response, to_ms(ttl, "ttl"))
        return await self._run(self._changed(statement))

    async def mark_unknown(self, key: str, token: str) -> bool:
        statement = (
            sa.update(t)
            .where(t.c.key == key, t.c.token == token, t.c.state == State.IN_FLIGHT.value)
            .values(state=State.UNKNOWN.value, token=None, lease_until=None)
        )
        return await self._run(self._changed(statement))

    async def release(self, key: str, token: str) -> bool:
        statement = sa.delete(t).where(t.c.key == key, t.c.token == token)
        return await self._run(self._changed(statement))

    async def take_over(self, key: str, *, lease: float) -> str | None:
        token = new_token()
        now = now_ms(self.dialect)
        free = sa.or_(
            t.c.state == State.UNKNOWN.value,
            sa.and_(t.c.state == State.IN_FLIGHT.value, t.c.lease_until <= now),
        )
        statement = (
            sa.update(t)
            .where(t.c.key == key, t.c.expires_at > now, free)
            .values(
                state=State.IN_FLIGHT.value, token=token, lease_until=now + to_ms(lease, "lease")
            )
        )
        return token if await self._run(self._changed(statement)) else None

    async def get(self, key: str) -> Record | None:
        return await self._run(lambda conn: read_record(conn, key))

    def prune(self) -> int:
        """Delete expired keys (run it now and then; expired keys are already ignored)."""
        statement = sa.delete(t).where(t.c.expires_at <= now_ms(self.dialect))
        return self._in_transaction(lambda conn: int(conn.execute(statement).rowcount))
