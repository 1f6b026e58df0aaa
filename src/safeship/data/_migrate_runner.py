"""Run migrations safely on PostgreSQL: a ``lock_timeout`` on every connection the run
uses, a retry with backoff when a lock could not be had in time (SQLSTATE 55P03), and the
INVALID indexes a failed ``CREATE INDEX CONCURRENTLY`` left behind, reported or dropped.

PostgreSQL's DDL is transactional, so an Alembic revision that timed out waiting for its
lock rolled back whole and running the upgrade again is safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from safeship.data._errors import MigrationFailedError
from safeship.data._indexes import _INVALID
from safeship.resilience.presets.db import sqlstate_of

__all__ = ["UpgradeResult", "configure_lock_timeout", "safe_upgrade", "upgrade_safeship"]

log = logging.getLogger("safeship.data.migrate")
T = TypeVar("T")
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class UpgradeResult(Generic[T]):
    value: T
    attempts: int
    invalid_indexes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def configure_lock_timeout(
    connection: sa.Connection, *, lock_timeout_ms: int = 2000, statement_timeout_ms: int = 0
) -> None:
    """For your Alembic ``env.py``: set the timeouts on the migration connection (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(f"SET lock_timeout = {int(lock_timeout_ms)}")
    if statement_timeout_ms:
        connection.exec_driver_sql(f"SET statement_timeout = {int(statement_timeout_ms)}")


@contextmanager
def _timeouts(engine: sa.Engine, lock_ms: int, statement_ms: int) -> Iterator[None]:
    """Every connection checked out of ``engine`` meanwhile has the timeouts; they are reset
    when it goes back to the pool, and the listeners are removed afterwards."""
    sets = [f"SET lock_timeout = {lock_ms}"] + (
        [f"SET statement_timeout = {statement_ms}"] if statement_ms else []
    )
    resets = ["RESET lock_timeout", "RESET statement_timeout"]

    def run(dbapi_connection: Any, statements: list[str]) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        if not getattr(dbapi_connection, "autocommit", True):
            dbapi_connection.commit()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        run(dbapi_connection, sets)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            run(dbapi_connection, resets)

    sa.event.listen(engine, "checkout", checkout)
    sa.event.listen(engine, "checkin", checkin)
    try:
        yield
    finally:
        sa.event.remove(engine, "checkout", checkout)
        sa.event.remove(engine, "checkin", checkin)


def _invalid(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {f'"{r.schema}"."{r.index}"' for r in conn.execute(sa.text(_INVALID))}


def safe_upgrade(
    engine: sa.Engine,
    run: Callable[[], T],
    *,
    lock_timeout_ms: int = 2000,
    statement_timeout_ms: int = 0,
    attempts: int = 5,
    backoff_base: float = 0.5,
    drop_invalid: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> UpgradeResult[T]:
    """Call ``run()`` (e.g. ``lambda: command.upgrade(cfg, "head")``) with the timeouts set,
    retrying lock timeouts; then report (or drop) INVALID indexes the run left behind.

    Raises :class:`MigrationFailedError` (with the indexes found) when ``run`` fails for
    another reason or keeps timing out.
    """
    if not 1 <= attempts <= 50:
        raise ValueError(f"attempts must be 1..50, got {attempts!r}")
    if engine.dialect.name != "postgresql":
        return UpgradeResult(run(), 1)
    before = _invalid(engine)
    error: BaseException | None = None
    value: Any = None
    attempt = 0
    with _timeouts(engine, int(lock_timeout_ms), int(statement_timeout_ms)):
        for attempt in range(1, attempts + 1):
            try:
                value, error = run(), None
                break
            except Exception as exc:  # noqa: BLE001 - classified: retried or raised below
                error = exc
                if sqlstate_of(exc) != LOCK_NOT_AVAILABLE or attempt == attempts:
                    break
                delay = backoff_base * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
                log.warning("data.migrate.lock_timeout", extra={"attempt": attempt, "delay": delay})
                sleep(delay)
    left = sorted(_invalid(engine) - before)
    dropped = _drop(engine, left) if drop_invalid else []
    for index in left:
        log.error("data.migrate.invalid_index", extra={"index": index, "dropped": index in dropped})
    if error is not None:
        raise MigrationFailedError(
            f"migration failed after {attempt} attempt(s): {error}", invalid_indexes=left
        ) from error
    return UpgradeResult(value, attempt, left, dropped)


def _drop(engine: sa.Engine, indexes: list[str]) -> list[str]:
    dropped = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for index in indexes:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
            dropped.append(index)
    return dropped


def upgrade_safeship(
    engine: sa.Engine,
    revision: str = "head",
    *,
    lock_timeout_ms: int = 2000,
    attempts: int = 5,
    backoff_base: float = 0.5,
    drop_invalid: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> UpgradeResult[str]:
    """safeship's own migrations through :func:`safe_upgrade` (``safeship db upgrade`` and
    ``create_app(migrate=True)``): the wait for a concurrent upgrader's advisory lock has no
    timeout, each run's migrations have ``lock_timeout_ms``, a 55P03 is retried with backoff.
    On SQLite it is one plain upgrade."""
    from safeship.db._migrate import upgrade

    return safe_upgrade(
        engine,
        lambda: upgrade(engine, revision, lock_timeout_ms=lock_timeout_ms),
        lock_timeout_ms=lock_timeout_ms,
        attempts=attempts,
        backoff_base=backoff_base,
        drop_invalid=drop_invalid,
        sleep=sleep,
    )
