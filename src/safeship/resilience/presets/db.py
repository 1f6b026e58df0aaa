"""Rerun a whole transaction when the database aborted it to stay consistent.

Under ``SERIALIZABLE`` (or ``REPEATABLE READ``) isolation, PostgreSQL aborts one of two
conflicting transactions with SQLSTATE ``40001`` (serialization failure), and breaks a
lock cycle with ``40P01`` (deadlock detected). Both are expected: the fix is to run the
*whole* transaction again, from ``BEGIN``, so it reads fresh data. Retrying a single
statement inside the aborted transaction cannot work.

::

    from safeship.resilience.presets.db import run_transaction

    def transfer(conn):
        conn.execute(debit, ...)
        conn.execute(credit, ...)

    run_transaction(engine.begin, transfer)          # SQLAlchemy (sync)
    await run_transaction_async(async_engine.begin, transfer_async)

``begin`` is anything returning a context manager that commits on success and rolls back
on error — ``engine.begin``, ``sessionmaker.begin``, or psycopg's ``conn.transaction``.
The SQLSTATE is found on psycopg 3, psycopg2 and asyncpg errors, and on SQLAlchemy's
wrappers of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

from safeship.resilience._retry import Retry
from safeship.resilience._schedules import FullJitter

__all__ = [
    "TRANSIENT_SQLSTATES",
    "is_transaction_conflict",
    "run_transaction",
    "run_transaction_async",
    "sqlstate_of",
    "transaction_retry",
]

C = TypeVar("C")
R = TypeVar("R")
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock detected."""


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, looking through wrappers and causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(current, attribute, None)
            if isinstance(code, str) and len(code) == 5:
                return code
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
        )
    return None


def is_transaction_conflict(exc: BaseException) -> bool:
    """True for a serialization failure (40001) or a deadlock (40P01)."""
    return sqlstate_of(exc) in TRANSIENT_SQLSTATES


def transaction_retry(*, attempts: int = 5, **options: Any) -> Retry:
    """A :class:`Retry` for conflicts only: short full-jitter backoff (20 ms base, 1 s cap)."""
    options.setdefault("schedule", FullJitter(base=0.02, cap=1.0))
    options.setdefault("name", "transaction")
    return Retry(attempts=attempts, retry_on=is_transaction_conflict, **options)


def run_transaction(
    begin: Callable[[], AbstractContextManager[C]],
    work: Callable[[C], R],
    *,
    retry: Retry | None = None,
) -> R:
    """Run ``work(conn)`` inside ``begin()``; start over on 40001 / 40P01."""
    policy = retry if retry is not None else transaction_retry()

    def attempt() -> R:
        with begin() as conn:
            return work(conn)

    return policy.call(attempt)


async def run_transaction_async(
    begin: Callable[[], AbstractAsyncContextManager[C]],
    work: Callable[[C], Awaitable[R]],
    *,
    retry: Retry | None = None,
) -> R:
    """The async twin of :func:`run_transaction`."""
    policy = retry if retry is not None else transaction_retry()

    async def attempt() -> R:
        async with begin() as conn:
            return await work(conn)

    return await policy.call_async(attempt)
