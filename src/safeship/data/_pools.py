"""One vocabulary for connection pools: SQLAlchemy's, psycopg_pool's and asyncpg's.

The reader (``pool_stats``, ``PoolStats``, ``watch_pool``) and the one exporter of the
``safeship_db_pool_*{pool}`` series (``PoolCollector``) live in ``safeship.observe._pools``,
which the control plane's ``/metrics`` uses too; they are re-exported here.
``check_headroom`` applies the rule processes x (size + overflow) <= max_connections -
reserved.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from safeship.data._errors import HeadroomError
from safeship.db._pool import PoolReport, pool_report
from safeship.observe._pools import PoolCollector, PoolStats, pool_stats, watch_pool

__all__ = [
    "PoolCollector",
    "PoolStats",
    "check_headroom",
    "pool_stats",
    "startup_headroom",
    "watch_pool",
]

log = logging.getLogger("safeship.data.pool")


def check_headroom(
    engine: sa.Engine,
    *,
    processes: int,
    pool_size: int,
    max_overflow: int,
    reserve: int = 3,
    strict: bool = True,
) -> PoolReport:
    """At start-up: does processes x (size + overflow) fit max_connections - reserved?

    With ``strict`` a fleet that does not fit raises :class:`HeadroomError`; otherwise the
    verdict is logged (``data.pool.headroom``) and returned.
    """
    with engine.connect() as conn:
        report = pool_report(
            conn,
            pool_size=pool_size,
            max_overflow=max_overflow,
            processes=processes,
            reserve=reserve,
        )
    if not report.fits:
        if strict:
            raise HeadroomError(report.describe())
        log.error("data.pool.headroom", extra={"verdict": report.describe()})
    return report


def startup_headroom(
    engine: sa.Engine, *, processes: int, pool_size: int, max_overflow: int, reserve: int = 3
) -> PoolReport | None:
    """:func:`check_headroom` for a service's start: logs the verdict, never raises.

    ``None`` on SQLite or when the server cannot be asked (readiness reports that)."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        return check_headroom(
            engine, processes=processes, pool_size=pool_size, max_overflow=max_overflow,
            reserve=reserve, strict=False,
        )  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        log.warning("data.pool.headroom_unknown", extra={"error": repr(exc)})
        return None
