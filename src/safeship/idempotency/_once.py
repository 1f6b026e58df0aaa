"""The primitive for consumers and webhooks: act on a key once, atomically.

    if await aonce(redis, f"whatsapp:{message_id}", ttl=86400):
        await send_message(...)

    async with first_time(conn, event_id, ttl=7 * 86400) as first:   # caller's transaction
        if first:
            await apply_effects(conn, ...)

On Redis a claim is ``SET key 1 NX PX ttl`` (never ``EXISTS`` then ``SET``); on SQL it is
one unique insert in the caller's transaction, so the claim commits or rolls back with the
effect.  When the store does not answer, ``on_store_error="closed"`` (the default) raises
:class:`IdempotencyStoreError` so nothing acts twice; ``"open"`` acts anyway, counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import sqlalchemy as sa

from safeship.idempotency import _metrics as metrics
from safeship.idempotency._errors import IdempotencyStoreError
from safeship.idempotency._model import MAX_KEY_LENGTH, scoped_key
from safeship.idempotency._sql import claim_statement
from safeship.idempotency._store import to_ms

__all__ = ["OnStoreError", "aonce", "first_time", "once"]

OnStoreError = Literal["closed", "open"]
_log = logging.getLogger("safeship.idempotency")
_REDIS_PREFIX = "safeship:once:"


def _check(key: str, scope: str, on_store_error: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}")
    if not scope:
        raise ValueError("scope must be non-empty (name the consumer, e.g. 'billing')")
    if on_store_error not in ("closed", "open"):
        raise ValueError(f"on_store_error must be 'closed' or 'open', got {on_store_error!r}")


def _kind(target: Any) -> str:
    module = type(target).__module__
    if module.startswith("redis.asyncio"):
        return "redis-async"
    if module.startswith("redis"):
        return "redis"
    if module.startswith("sqlalchemy.ext.asyncio"):
        return "sql-async"
    if module.startswith("sqlalchemy"):
        return "sql"
    raise TypeError(
        f"target must be a redis client or a SQLAlchemy connection/session, "
        f"got {type(target).__name__}"
    )


def _dialect(target: Any) -> str:
    bind = target.get_bind() if hasattr(target, "get_bind") else target
    return str(bind.dialect.name)


def _sql_claim(target: Any, key: str, scope: str, ttl_ms: int) -> tuple[Any, dict[str, Any]]:
    name = scoped_key(f"once:{scope}", key)
    return claim_statement(_dialect(target), name, "-", "once", None, ttl_ms)


def _outcome(first: bool, scope: str) -> bool:
    if first:
        metrics.claimed("once")
    else:
        metrics.duplicate("once")
        _log.info("idempotency.duplicate", extra={"scope": scope})
    return first


def _store_down(exc: BaseException, scope: str, on_store_error: str) -> bool:
    metrics.store_error("once")
    _log.warning(
        "idempotency.store_error",
        extra={"scope": scope, "error": str(exc), "fail": on_store_error},
    )
    if on_store_error == "open":
        return True
    raise IdempotencyStoreError(f"the key store did not answer, so nothing ran: {exc}") from exc


def _store_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sa.exc.OperationalError, sa.exc.InterfaceError, OSError]
    with contextlib.suppress(ImportError):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    return tuple(errors)


def once(
    target: Any,
    key: str,
    *,
    ttl: float,
    scope: str = "default",
    on_store_error: OnStoreError = "closed",
) -> bool:
    """Claim ``key`` (within ``scope``) for ``ttl`` seconds: True the first time, False
    for every duplicate until the claim expires.

    ``target`` is a sync ``redis.Redis`` or a SQLAlchemy ``Connection``/``Session`` (the
    claim joins its transaction).  Use :func:`aonce` for async ones.
    """
    _check(key, scope, on_store_error)
    ttl_ms = to_ms(ttl, "ttl")
    kind = _kind(target)
    if kind.endswith("-async"):
        raise TypeError(f"once() takes a sync {kind[:-6]} target; use `await aonce(...)`")
    try:
        if kind == "redis":
            first = bool(target.set(f"{_REDIS_PREFIX}{scope}:{key}", b"1", nx=True, px=ttl_ms))
        else:
            first = target.execute(*_sql_claim(target, key, scope, ttl_ms)).first() is not None
    except _store_errors() as exc:
        return _store_down(exc, scope, on_store_error)
    return _outcome(first, scope)


async def aonce(
    target: Any,
    key: str,
    *,
    ttl: float,
    scope: str = "default",
    on_store_error: OnStoreError = "closed",
) -> bool:
    """:func:`once` for ``redis.asyncio.Redis`` and SQLAlchemy async connections/sessions."""
    _check(key, scope, on_store_error)
    ttl_ms = to_ms(ttl, "ttl")
    kind = _kind(target)
    if not kind.endswith("-async"):
        raise TypeError(f"aonce() takes an async {kind} target; use `once(...)` (no await)")
    try:
        if kind == "redis-async":
            name = f"{_REDIS_PREFIX}{scope}:{key}"
            first = bool(await target.set(name, b"1", nx=True, px=ttl_ms))
        else:
            result = await target.execute(*_sql_claim(target, key, scope, ttl_ms))
            first = result.first() is not None
    except _store_errors() as exc:
        return _store_down(exc, scope, on_store_error)
    return _outcome(first, scope)


@contextlib.asynccontextmanager
async def first_time(
    target: Any,
    key: str,
    *,
    ttl: float,
    scope: str = "default",
    on_store_error: OnStoreError = "closed",
) -> AsyncIterator[bool]:
    """``async with first_time(target, key, ttl=...) as first:`` -- ``first`` as :func:`aonce`.

    When the block raises, a Redis claim is given back (the effect failed, so a redelivery
    may act); a SQL claim rolls back with the caller's transaction.
    """
    first = await aonce(target, key, ttl=ttl, scope=scope, on_store_error=on_store_error)
    try:
        yield first
    except BaseException:
        if first and _kind(target) == "redis-async":
            give_back: Callable[[], Awaitable[Any]] = lambda: target.delete(  # noqa: E731
                f"{_REDIS_PREFIX}{scope}:{key}"
            )
            with contextlib.suppress(*_store_errors()):
                await give_back()
        raise
