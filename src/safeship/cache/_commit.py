"""Invalidate when the caller's transaction commits, and only then.

Invalidating before the commit lets another reader load the old row and cache it again
after the invalidation. A SQLAlchemy ``Session`` has ``after_commit``. A Core
``Connection`` has no after-commit event, only ``commit``, which fires *before* the DBAPI
commit; there the pending invalidations move to the pooled connection's record as
"committing" and run at the first public event that shows the commit is over: the
connection's next ``begin``, or the pool's ``checkin`` (``with engine.begin()`` ends with
it at once). A failed commit reaches the engine's ``handle_error`` first, which drops
them; SQLAlchemy commits and raises as it always does. A rollback discards what was
pending.
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
_COMMITTING = "safeship.cache.committing"


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
        event.listen(target, "begin", _connection_begun)
    engine = target.engine
    if not event.contains(engine, "checkin", _checked_in):
        event.listen(engine, "checkin", _checked_in)
        event.listen(engine, "handle_error", _failed)
    pending.append((cache, tags, keys))


def _session_committed(session: Any) -> None:
    _flush(session.info.get(_PENDING, []))


def _session_rolled_back(session: Any) -> None:
    session.info.get(_PENDING, []).clear()


def _record_info(conn: Any) -> dict[str, Any] | None:
    """The pool record's info of ``conn``'s DBAPI connection (it outlives the checkout,
    so ``checkin`` finds it); None once the connection is gone."""
    try:
        info: dict[str, Any] = conn.connection.info
    except Exception:  # noqa: BLE001 - closed or invalidated: nothing to hand over
        return None
    return info


def _connection_committing(conn: Any) -> None:
    pending = conn.info.get(_PENDING)
    if not pending:
        return
    info = _record_info(conn)
    if info is None:
        pending.clear()
        return
    info.setdefault(_COMMITTING, []).extend(pending)
    pending.clear()


def _connection_begun(conn: Any) -> None:
    info = _record_info(conn)
    if info is not None and info.get(_COMMITTING):
        _flush(info[_COMMITTING])  # the previous transaction's commit returned


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    committing = record.info.get(_COMMITTING) if record is not None else None
    if committing:
        _flush(committing)


def _failed(context: Any) -> None:
    conn = context.connection
    info = _record_info(conn) if conn is not None else None
    if info is not None and info.get(_COMMITTING):
        info[_COMMITTING].clear()  # the commit (the only call since the event) failed


def _connection_rolled_back(conn: Any) -> None:
    conn.info.get(_PENDING, []).clear()
