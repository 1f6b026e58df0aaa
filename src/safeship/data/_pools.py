"""One vocabulary for connection pools: SQLAlchemy's, psycopg_pool's and asyncpg's.

``pool_stats(pool)`` reads any of them as :class:`PoolStats` (size, in use, idle,
waiting, wait time, exhaustion events); ``PoolCollector`` exports the registered pools
as Prometheus gauges at scrape time.  SQLAlchemy's public pool API does not say who
waits; ``watch_pool(engine)`` counts, through its ``checkout`` event, checkouts that took
the last free connection (an exhaustion event).  ``check_headroom`` applies the rule
processes x (size + overflow) <= max_connections - reserved.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from safeship.data._errors import HeadroomError
from safeship.db._pool import PoolReport, configured_overflow, pool_report, remember_overflow

__all__ = [
    "PoolCollector",
    "PoolStats",
    "check_headroom",
    "pool_stats",
    "startup_headroom",
    "watch_pool",
]

log = logging.getLogger("safeship.data.pool")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool at one moment; ``None`` where the pool cannot know the figure."""

    kind: str
    size: int
    max_size: int | None
    in_use: int
    idle: int
    waiting: int | None = None
    wait_seconds_total: float | None = None
    exhausted_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Watch:
    """Checkouts of one SQLAlchemy pool that took its last free connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exhausted = 0
        self.lock = threading.Lock()


_WATCHES: weakref.WeakKeyDictionary[sa.pool.Pool, _Watch] = weakref.WeakKeyDictionary()


def watch_pool(engine: sa.Engine, *, max_overflow: int | None = None) -> None:
    """Count, for ``engine``'s pool, checkouts that took its last free connection (the
    next caller waits): an exhaustion event. SQLAlchemy's public events say nothing about
    waiting callers, so wait time and the number waiting stay unknown (``None``).

    The pool's limit is the ``max_overflow`` safeship's ``create_engine`` configured, or
    the one given here for an engine built elsewhere."""
    pool = engine.pool
    if pool in _WATCHES:
        return
    limit = _max_size(pool, max_overflow)
    if limit is None:
        raise ValueError(
            "watch_pool: this engine's max_overflow is unknown; pass max_overflow= "
            "(the value it was created with)"
        )
    if max_overflow is not None:
        remember_overflow(engine, max_overflow)  # the doctor, overview and /metrics read it
    watch = _WATCHES[pool] = _Watch(limit)

    def checked_out(*_: object) -> None:
        if _in_use(pool) >= watch.limit:
            with watch.lock:
                watch.exhausted += 1

    sa.event.listen(pool, "checkout", checked_out)


def _in_use(pool: Any) -> int:
    return int(pool.checkedout()) if hasattr(pool, "checkedout") else 0


def _max_size(pool: Any, max_overflow: int | None = None) -> int | None:
    if not hasattr(pool, "size"):
        return 1
    overflow = configured_overflow(pool) if max_overflow is None else max_overflow
    return None if overflow is None else int(pool.size()) + max(int(overflow), 0)


def pool_stats(pool: Any) -> PoolStats:
    """Read a SQLAlchemy pool (or engine), a psycopg_pool pool, or an asyncpg pool."""
    if isinstance(pool, sa.Engine):
        pool = pool.pool
    elif hasattr(pool, "sync_engine"):
        pool = pool.sync_engine.pool
    if hasattr(pool, "get_stats") and hasattr(pool, "max_size"):
        return _psycopg_stats(pool)
    if hasattr(pool, "get_idle_size"):
        size = int(pool.get_size())
        idle = int(pool.get_idle_size())
        return PoolStats("asyncpg", size, int(pool.get_max_size()), size - idle, idle)
    if isinstance(pool, sa.pool.Pool):
        return _sqlalchemy_stats(pool)
    raise TypeError(f"pool_stats reads SQLAlchemy, psycopg_pool or asyncpg pools, not {pool!r}")


def _psycopg_stats(pool: Any) -> PoolStats:
    stats = pool.get_stats()
    size = int(stats.get("pool_size", 0))
    idle = int(stats.get("pool_available", 0))
    return PoolStats(
        "psycopg_pool",
        size,
        int(pool.max_size),
        size - idle,
        idle,
        waiting=int(stats.get("requests_waiting", 0)),
        wait_seconds_total=float(stats.get("requests_wait_ms", 0)) / 1000,
        exhausted_total=int(stats.get("requests_queued", 0)),
    )


def _sqlalchemy_stats(pool: sa.pool.Pool) -> PoolStats:
    watch = _WATCHES.get(pool)
    in_use = _in_use(pool)
    idle = int(pool.checkedin()) if hasattr(pool, "checkedin") else 0
    return PoolStats(
        "sqlalchemy",
        in_use + idle,
        watch.limit if watch is not None else _max_size(pool),
        in_use,
        idle,
        exhausted_total=None if watch is None else watch.exhausted,
    )


class PoolCollector:
    """Prometheus collector of named pools: ``safeship_db_pool_*{pool=...}`` at scrape time."""

    def __init__(self, pools: dict[str, Any] | None = None) -> None:
        self.pools: dict[str, Any] = dict(pools or {})

    def add(self, name: str, pool: Any) -> None:
        if len(self.pools) >= 50 and name not in self.pools:
            raise ValueError("a PoolCollector exports at most 50 pools")
        self.pools[name] = pool

    def collect(self) -> Iterator[Metric]:
        gauges = {
            field: GaugeMetricFamily(f"safeship_db_pool_{field}", help_, labels=["pool"])
            for field, help_ in (
                ("size", "Connections open in the pool."),
                ("max_size", "The most connections the pool may open (size + overflow)."),
                ("in_use", "Connections checked out."),
                ("idle", "Connections open and free."),
                ("waiting", "Callers waiting for a connection."),
            )
        }
        wait = CounterMetricFamily(
            "safeship_db_pool_wait_seconds",
            "Time callers waited for a connection.",
            labels=["pool"],
        )
        exhausted = CounterMetricFamily(
            "safeship_db_pool_exhausted",
            "Checkouts that found every connection taken.",
            labels=["pool"],
        )
        for name, pool in self.pools.items():
            stats = pool_stats(pool)
            for field, family in gauges.items():
                value = getattr(stats, field)
                if value is not None:
                    family.add_metric([name], value)
            if stats.wait_seconds_total is not None:
                wait.add_metric([name], stats.wait_seconds_total)
            if stats.exhausted_total is not None:
                exhausted.add_metric([name], stats.exhausted_total)
        yield from gauges.values()
        yield wait
        yield exhausted


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
