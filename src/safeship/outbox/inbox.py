"""Idempotent consumers: record a message id in the same transaction as the handler's
effects, so a redelivered message has no second effect.

    with engine.begin() as conn:
        if inbox.seen(conn, consumer="billing", message_id=msg_id):
            return            # already handled: just ack again
        apply_effects(conn, ...)
    await msg.ack()           # ack only after the commit

``seen`` (sync connections; ``await aseen(...)`` for async ones) inserts the id and
returns False the first time; a concurrent duplicate waits on
the same key and then sees True (PostgreSQL ``ON CONFLICT DO NOTHING``; SQLite ``INSERT OR
IGNORE``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from safeship.outbox import _schema as schema
from safeship.outbox._stage import OutboxConnectionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["aseen", "prune", "seen"]


def _statement(dialect: str, consumer: str, message_id: str) -> Any:
    if not consumer or not message_id or len(consumer) > 200 or len(message_id) > 255:
        raise ValueError("inbox consumer (<= 200 chars) and message_id (<= 255) must be set")
    values = {"consumer": consumer, "message_id": message_id, "received_at": datetime.now(UTC)}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (
            pg_insert(schema.inbox)
            .values(values)
            .on_conflict_do_nothing()
            .returning(schema.inbox.c.message_id)
        )
    if dialect == "sqlite":
        return (
            sa.insert(schema.inbox)
            .values(values)
            .prefix_with("OR IGNORE")
            .returning(schema.inbox.c.message_id)
        )
    raise ValueError(f"the inbox supports postgresql and sqlite, not {dialect!r}")


def _dialect(conn: Any) -> str:
    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
    return str(bind.dialect.name)


def _is_async(conn: Any) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.ext.asyncio")


def seen(conn: sa.Connection | Session, *, consumer: str, message_id: str) -> bool:
    """Record ``message_id`` for ``consumer`` in ``conn``'s transaction; True if it was
    already recorded (the message is a duplicate).

    Sync connections and sessions only: an async one raises :class:`OutboxConnectionError`
    (use :func:`aseen`), since an un-awaited result would read as "seen" and drop the message.
    """
    if _is_async(conn):
        raise OutboxConnectionError(
            f"conn: seen() takes a sync connection, got the async {type(conn).__name__}; "
            "use `await aseen(conn, ...)` instead"
        )
    statement = _statement(_dialect(conn), consumer, message_id)
    return conn.execute(statement).first() is None


async def aseen(conn: AsyncConnection | AsyncSession, *, consumer: str, message_id: str) -> bool:
    """:func:`seen` for a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``."""
    if not _is_async(conn):
        raise OutboxConnectionError(
            f"conn: aseen() takes a SQLAlchemy AsyncConnection or AsyncSession, got "
            f"{type(conn).__name__}; use `seen(conn, ...)` (no await) for a sync one"
        )
    statement = _statement(_dialect(conn), consumer, message_id)
    result = await conn.execute(statement)
    return result.first() is None


def prune(bind: sa.Engine | sa.Connection, *, older_than: timedelta) -> int:
    """Forget ids recorded more than ``older_than`` ago (longer than any redelivery window)."""
    if older_than <= timedelta(0):
        raise ValueError("prune older_than must be positive")
    cutoff = datetime.now(UTC) - older_than
    statement = sa.delete(schema.inbox).where(schema.inbox.c.received_at < cutoff)
    if isinstance(bind, sa.Connection):
        return int(bind.execute(statement).rowcount)
    with bind.begin() as conn:
        return int(conn.execute(statement).rowcount)
