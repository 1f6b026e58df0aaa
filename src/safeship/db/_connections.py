"""Which database API a caller's connection speaks, for writes that go through it.

The outbox's ``stage`` and the jobs' ``enqueue`` write through the caller's own connection
(SQLAlchemy sync or async, psycopg 3 sync or async, asyncpg); both ask here which one it
is, and refuse a sync connection given to the async function (or the other way round)
before anything runs, with the call to make instead.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

#: The kinds a sync function (``stage``, ``enqueue``) can write through.
SYNC_KINDS = frozenset({"sa", "psycopg"})


def connection_kind(conn: Any) -> str | None:
    """``sa``, ``sa-async``, ``psycopg``, ``psycopg-async``, ``asyncpg``, or None."""
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
    return None


def checked_sync(kind: str, conn: Any, function: str, error: type[Exception]) -> str:
    """``kind``, or ``error`` when an async connection was given to sync ``function``."""
    if kind not in SYNC_KINDS:
        raise error(
            f"conn: {function}() takes a sync connection, got the async "
            f"{type(conn).__name__}; use `await a{function}(conn, ...)` instead"
        )
    return kind


def checked_async(kind: str, conn: Any, function: str, error: type[Exception]) -> str:
    """``kind``, or ``error`` when a sync connection was given to ``a{function}``."""
    if kind in SYNC_KINDS:
        raise error(
            f"conn: a{function}() takes an async connection, got the sync "
            f"{type(conn).__name__}; use `{function}(conn, ...)` (no await) instead"
        )
    return kind
