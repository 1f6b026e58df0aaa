"""Connection-budget report for PostgreSQL: will the fleet's pools fit the server?

Pool exhaustion shows up as requests hanging on ``pool_timeout``.  ``pool_report`` compares
what every process may open (pool size + overflow, times the expected processes) with the
server's ``max_connections`` minus a reserve, and lists connections by state.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import sqlalchemy as sa

#: ``max_overflow`` of the pools safeship's ``create_engine`` built (SQLAlchemy keeps it
#: private, and a pool's limit is size + overflow).
_OVERFLOW: weakref.WeakKeyDictionary[sa.pool.Pool, int] = weakref.WeakKeyDictionary()


def remember_overflow(engine: sa.Engine, max_overflow: int) -> None:
    """Note the ``max_overflow`` ``engine``'s pool was built with."""
    _OVERFLOW[engine.pool] = max_overflow


def configured_overflow(pool: sa.pool.Pool) -> int | None:
    """The ``max_overflow`` the pool was built with, when safeship built it."""
    if not isinstance(pool, sa.QueuePool):
        return 0
    return _OVERFLOW.get(pool)


@dataclass(frozen=True, slots=True)
class PoolReport:
    """What the server allows, what the fleet may use, and what is in use now."""

    max_connections: int
    reserved: int
    fleet_demand: int
    by_state: dict[str, int] = field(default_factory=dict)
    waiting: int = 0

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def fits(self) -> bool:
        return self.fleet_demand <= self.available

    def describe(self) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.by_state.items())) or "none"
        verdict = "fits" if self.fits else "EXCEEDS the server's limit"
        return (
            f"pools may open {self.fleet_demand} connection(s); the server allows "
            f"{self.available} ({self.max_connections} max_connections - {self.reserved} "
            f"reserved): {verdict}. In use now: {states}; waiting on locks: {self.waiting}."
        )


def pool_report(
    conn: sa.Connection,
    *,
    pool_size: int,
    max_overflow: int,
    processes: int,
    reserve: int,
) -> PoolReport:
    """Read the server's limits and connection states (PostgreSQL only)."""
    if conn.dialect.name != "postgresql":
        raise ValueError("pool_report needs PostgreSQL; SQLite has no connection limit")
    max_connections = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
    superuser = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
    rows = conn.execute(
        sa.text(
            "SELECT coalesce(state, 'background') AS state, count(*) AS n, "
            "count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting "
            "FROM pg_stat_activity GROUP BY 1"
        )
    ).all()
    return PoolReport(
        max_connections=max_connections,
        reserved=superuser + reserve,
        fleet_demand=(pool_size + max_overflow) * processes,
        by_state={str(r.state): int(r.n) for r in rows},
        waiting=sum(int(r.waiting) for r in rows),
    )
