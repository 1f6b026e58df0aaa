"""Connection pools: one reader, one exporter.

``pool_stats(pool)`` reads SQLAlchemy's, psycopg_pool's or asyncpg's pool as
:class:`PoolStats` (open, configured and maximum size, in use, idle, waiting, wait time,
exhaustion events); ``pool_families(pools)`` turns named pools into the
``safeship_db_pool_*{pool=...}`` series, read at scrape time without any query.  The
control plane's ``/metrics`` (``DatabaseCollector``), an app's ``PoolCollector`` and the
doctor (``safeship.data.diagnose``) all read through here.

SQLAlchemy's public pool API does not say who waits; ``watch_pool(engine)`` counts, through
its ``checkout`` event, checkouts that took the last free connection (an exhaustion event).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from safeship.db._pool import configured_overflow, remember_overflow

__all__ = ["PoolCollector", "PoolStats", "pool_families", "pool_stats", "watch_pool"]

#: The ``pool`` label of an engine given on its own (the control plane's, an app's one).
DEFAULT_POOL = "default"
MAX_POOLS = 50


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool at one moment; ``None`` where the pool cannot know the figure.

    ``size`` is the connections open now, ``min_size`` the ones the pool keeps
    (SQLAlchemy's ``pool_size``, psycopg_pool's and asyncpg's ``min_size``), ``max_size``
    the most it may open (SQLAlchemy: ``pool_size`` + ``max_overflow``)."""

    kind: str
    size: int
    max_size: int | None
    in_use: int
    idle: int
    waiting: int | None = None
    wait_seconds_total: float | None = None
    exhausted_total: int | None = None
    min_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Watch:
    """Checkouts of one SQLAlchemy pool that took its last free connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exhausted = 0
        self.lock = threading.Lock()


_WATCHES: weakref.WeakKeyDictionary[sa.pool.Pool, _Watch] = weakref.WeakKeyDictionary()
_WATCHING = threading.Lock()


def watch_pool(engine: sa.Engine, *, max_overflow: int | None = None) -> None:
    """Count, for ``engine``'s pool, checkouts that took its last free connection (the
    next caller waits): an exhaustion event. SQLAlchemy's public events say nothing about
    waiting callers, so wait time and the number waiting stay unknown (``None``).

    The pool's limit is the ``max_overflow`` safeship's ``create_engine`` configured, or
    the one given here for an engine built elsewhere. Watching twice is a no-op."""
    pool = engine.pool
    with _WATCHING:
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
    if not isinstance(pool, sa.QueuePool):
        return 1 if isinstance(pool, sa.StaticPool) else None  # NullPool etc.: no limit
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
        return PoolStats(
            "asyncpg", size, int(pool.get_max_size()), size - idle, idle,
            min_size=int(pool.get_min_size()),
        )  # fmt: skip
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
        min_size=int(pool.min_size),
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
        min_size=int(pool.size()) if isinstance(pool, sa.QueuePool) else None,
    )


def _named(pools: Any) -> dict[str, Any]:
    named = dict(pools) if isinstance(pools, Mapping) else {DEFAULT_POOL: pools}
    if len(named) > MAX_POOLS:
        raise ValueError(f"at most {MAX_POOLS} pools are exported, got {len(named)}")
    return named


def pool_families(pools: Any) -> list[Metric]:
    """The ``safeship_db_pool_*`` series of ``pools``: one pool (an engine, a psycopg_pool
    or asyncpg pool, labelled ``pool="default"``) or a mapping of name to pool."""
    labels = ["pool"]
    connections = GaugeMetricFamily(
        "safeship_db_pool_connections",
        "Connections of the pool by state: in_use (checked out) or idle (checked in).",
        labels=["pool", "state"],
    )
    size = GaugeMetricFamily(
        "safeship_db_pool_size",
        "Connections the pool keeps (pool_size / min_size), without overflow.",
        labels=labels,
    )
    limit = GaugeMetricFamily(
        "safeship_db_pool_max_connections",
        "Most connections the pool may open (size + overflow).",
        labels=labels,
    )
    overflow = GaugeMetricFamily(
        "safeship_db_pool_overflow",
        "Connections open beyond the kept size (negative: not yet opened).",
        labels=labels,
    )
    waiting = GaugeMetricFamily(
        "safeship_db_pool_waiting", "Callers waiting for a connection.", labels=labels
    )
    wait = CounterMetricFamily(
        "safeship_db_pool_wait_seconds", "Time callers waited for a connection.", labels=labels
    )
    exhausted = CounterMetricFamily(
        "safeship_db_pool_exhausted",
        "Checkouts that found every connection taken (or took the last one).",
        labels=labels,
    )
    for name, pool in _named(pools).items():
        stats = pool_stats(pool)
        connections.add_metric([name, "in_use"], stats.in_use)
        connections.add_metric([name, "idle"], stats.idle)
        if stats.min_size is not None:
            size.add_metric([name], stats.min_size)
            overflow.add_metric([name], stats.size - stats.min_size)
        if stats.max_size is not None:
            limit.add_metric([name], stats.max_size)
        if stats.waiting is not None:
            waiting.add_metric([name], stats.waiting)
        if stats.wait_seconds_total is not None:
            wait.add_metric([name], stats.wait_seconds_total)
        if stats.exhausted_total is not None:
            exhausted.add_metric([name], stats.exhausted_total)
    return [connections, size, limit, overflow, waiting, wait, exhausted]


def watch_if_known(pools: Any) -> None:
    """Watch the SQLAlchemy engines among ``pools`` whose limit is known (exhaustion
    events on ``/metrics``); the others keep ``exhausted`` unknown."""
    for pool in _named(pools).values():
        engine = pool.sync_engine if hasattr(pool, "sync_engine") else pool
        if isinstance(engine, sa.Engine):
            with contextlib.suppress(ValueError):  # limit unknown: exhaustion unknown
                watch_pool(engine)


class PoolCollector:
    """Named pools as metrics, read at each scrape without any query:
    ``REGISTRY.register(PoolCollector(engine))`` (``pool="default"``) or
    ``PoolCollector({"api": engine, "batch": psycopg_pool})``.

    SQLAlchemy engines whose ``max_overflow`` is known (safeship's ``create_engine``, or
    :func:`watch_pool` with ``max_overflow=``) are watched for exhaustion events."""

    def __init__(self, pools: Any = None) -> None:
        self.pools: dict[str, Any] = _named(pools) if pools is not None else {}
        watch_if_known(self.pools)

    def add(self, name: str, pool: Any) -> None:
        if len(self.pools) >= MAX_POOLS and name not in self.pools:
            raise ValueError(f"a PoolCollector exports at most {MAX_POOLS} pools")
        self.pools[name] = pool
        watch_if_known({name: pool})

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from pool_families(self.pools)
