"""``ctx.complete(conn)``: finish a job in the caller's own transaction, fenced by token.

The job moves to history as ``succeeded`` in the same transaction as the handler's own
writes, so "done" and the effect commit together or not at all.  If this attempt no longer
owns the job (lease taken over, handed back), nothing is written and :class:`LeaseLostError` is
raised, which rolls the caller's transaction back with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from safeship.jobs import _sql_pg as sql
from safeship.jobs._enqueue import async_kind, sqlite_time, sync_kind
from safeship.jobs._model import LeaseLostError

__all__ = ["complete_async", "complete_sync"]


def _params(job: uuid.UUID, token: int, result: str | None, ttl: float | None) -> list[Any]:
    return [[job], [token], ["succeeded"], [result], [None], [True], [False], [ttl]]


def _pg_sa() -> str:
    return sql.render(sql.FINISH, "sa", sql.FINISH_TYPES)


def complete_sync(
    conn: Any, job: uuid.UUID, token: int, result: str | None, ttl: float | None
) -> None:
    """Finish ``job`` (attempt ``token``) through a sync connection, or raise LeaseLostError."""
    conn_kind = sync_kind(conn, "complete")
    if conn_kind == "sa":
        bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
        if bind.dialect.name == "sqlite":
            done = _sqlite(conn, job, token, result, ttl)
        else:
            params = {f"p{i}": v for i, v in enumerate(_params(job, token, result, ttl))}
            done = conn.execute(sa.text(_pg_sa()), params).first() is not None
    else:
        statement = sql.render(sql.FINISH, "psycopg", sql.FINISH_TYPES)
        done = conn.execute(statement, _params(job, token, result, ttl)).fetchone() is not None
    if not done:
        raise LeaseLostError(f"job {job}: this attempt no longer owns it; nothing was completed")


def _sqlite(conn: Any, job: uuid.UUID, token: int, result: str | None, ttl: float | None) -> bool:
    from safeship.jobs._store_sqlite import _DELETE, _HISTORY

    now = datetime.now(UTC)
    params = {
        "id": job.hex,
        "token": token,
        "state": "succeeded",
        "err": None,
        "give_back": 0,
        "crash": 0,
        "now": sqlite_time(now),
        "before": None,
        "result": result,
        "expires": None if ttl is None else sqlite_time(now + timedelta(seconds=ttl)),
    }
    if conn.execute(_HISTORY, params).rowcount != 1:
        return False
    conn.execute(_DELETE, params)
    return True


async def complete_async(
    conn: Any, job: uuid.UUID, token: int, result: str | None, ttl: float | None
) -> None:
    """:func:`complete_sync` for async connections (asyncpg, psycopg, SQLAlchemy async)."""
    conn_kind = async_kind(conn, "complete")
    if conn_kind == "sa-async":
        await conn.run_sync(complete_sync, job, token, result, ttl)
        return
    if conn_kind == "asyncpg":
        statement = sql.render(sql.FINISH, "asyncpg", sql.FINISH_TYPES)
        done = await conn.fetchrow(statement, *_params(job, token, result, ttl)) is not None
    else:
        statement = sql.render(sql.FINISH, "psycopg", sql.FINISH_TYPES)
        cursor = await conn.execute(statement, _params(job, token, result, ttl))
        done = await cursor.fetchone() is not None
    if not done:
        raise LeaseLostError(f"job {job}: this attempt no longer owns it; nothing was completed")
