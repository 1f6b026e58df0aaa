"""Invalidate when the caller's transaction commits, and only then.

Invalidating before the commit lets another reader load the old row and cache it again
after the invalidation. A SQLAlchemy ``Session`` has ``after_commit``; a Core
``Connection`` has only a ``commit`` event that fires *before* the DBAPI commit, so there
the hook commits the DBAPI connection itself first (SQLAlchemy's own commit that follows
finds nothing left to commit) and invalidates once that succeeded. A rollback discards
what was pending.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safeship.cache._api import Cache

__all__ = ["invalidate_after_commit"]

logger = logging.getLogger("safeship.cache")
_PENDING = "safeship.cache.pending"


def _flush(pending: list[tuple[Any, tuple[str, ...], list[str]]]) -> None:
    batch, pending[:] = list(pending), []
    for cache, tags, keys in batch:
        try:
            _invalidate(cache, tags, keys)
        except Exception as exc:  # noqa: BLE001 - the commit happened; log, never raise
            logger.warning("cache.after_commit_failed", extra={"error": repr(exc)})


def _invalidate(cache: Cache, tags: tuple[str, ...], keys: list[str]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None and cache.redis is not None and cache.redis.aclient is not None:
        cache.mark_invalidated(keys=keys, tags=tags)
        if cache.memory is not None:  # this process at once; Redis and the others next
            cache.memory.drop_tags(tags)
            cache.memory.drop_keys(keys)

        async def both() -> None:
            if tags:
                await cache.ainvalidate_tags(*tags)
            if keys:
                await cache.adelete_keys(keys)

        task = loop.create_task(both())
        cache._background.add(task)
        task.add_done_callback(cache._background.discard)
        return
    if tags:
        cache.invalidate_tags(*tags)
    if keys:
        cache.delete_keys(keys)


def _session_target(transaction: Any) -> Any | None:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    if isinstance(transaction, AsyncSession):
        return transaction.sync_session
    return transaction if isinstance(transaction, Session) else None


def _connection_target(transaction: Any) -> Any | None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection

    if isinstance(transaction, AsyncConnection):
        return transaction.sync_connection
    return transaction if isinstance(transaction, sa.Connection) else None


def invalidate_after_commit(
    cache: Cache, transaction: Any, tags: tuple[str, ...], keys: list[str]
) -> None:
    """Queue an invalidation on ``transaction``'s info; hooks are installed once each."""
    from sqlalchemy import event

    target = _session_target(transaction)
    if target is not None:
        pending = target.info.setdefault(_PENDING, [])
        if not event.contains(target, "after_commit", _session_committed):
            event.listen(target, "after_commit", _session_committed)
            event.listen(target, "after_rollback", _session_rolled_back)
        pending.append((cache, tags, keys))
        return
    target = _connection_target(transaction)
    if target is None:
        raise TypeError(
            "invalidate_after_commit takes a SQLAlchemy Session, AsyncSession, Connection "
            f"or AsyncConnection, got {type(transaction).__name__}"
        )
    pending = target.info.setdefault(_PENDING, [])
    if not event.contains(target, "commit", _connection_committing):
        event.listen(target, "commit", _connection_committing)
        event.listen(target, "rollback", _connection_rolled_back)
    pending.append((cache, tags, keys))


def _session_committed(session: Any) -> None:
    _flush(session.info.get(_PENDING, []))


def _session_rolled_back(session: Any) -> None:
    session.info.get(_PENDING, []).clear()


def _connection_committing(conn: Any) -> None:
    pending = conn.info.get(_PENDING, [])
    if not pending:
        return
    conn.connection.dbapi_connection.commit()  # raises (and invalidates nothing) on failure
    _flush(pending)


def _connection_rolled_back(conn: Any) -> None:
    conn.info.get(_PENDING, []).clear()
