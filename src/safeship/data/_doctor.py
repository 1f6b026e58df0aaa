"""The database doctor: pools, connection headroom and index health in one report, for
``safeship db doctor``, the control plane's API and its Database page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from safeship.data._indexes import IndexHealth, index_health
from safeship.data._pools import PoolStats, pool_stats
from safeship.db._pool import PoolReport, configured_overflow, pool_report

__all__ = ["DoctorReport", "diagnose"]


@dataclass(frozen=True, slots=True)
class DoctorReport:
    dialect: str
    pools: dict[str, PoolStats] = field(default_factory=dict)
    headroom: PoolReport | None = None
    indexes: IndexHealth | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        lines = [] if self.headroom is None or self.headroom.fits else [self.headroom.describe()]
        return lines + ([] if self.indexes is None else self.indexes.problems())

    def to_dict(self) -> dict[str, Any]:
        headroom = None
        if self.headroom is not None:
            h = self.headroom
            headroom = {
                "max_connections": h.max_connections,
                "reserved": h.reserved,
                "available": h.available,
                "fleet_demand": h.fleet_demand,
                "fits": h.fits,
                "by_state": h.by_state,
                "waiting_on_locks": h.waiting,
            }
        return {
            "dialect": self.dialect,
            "pools": {name: p.to_dict() for name, p in self.pools.items()},
            "headroom": headroom,
            "indexes": None if self.indexes is None else self.indexes.to_dict(),
            "problems": self.problems,
            "notes": self.notes,
        }


def diagnose(
    engine: sa.Engine,
    *,
    processes: int = 1,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    reserve: int = 3,
    pools: dict[str, Any] | None = None,
) -> DoctorReport:
    """Read everything the doctor knows about ``engine``'s database; changes nothing."""
    watched = pools or {"engine": engine}
    if engine.dialect.name != "postgresql":
        note = "index health and connection headroom need PostgreSQL"
        stats = {name: pool_stats(p) for name, p in watched.items()}
        return DoctorReport(engine.dialect.name, stats, notes=[note])
    size = pool_size if pool_size is not None else getattr(engine.pool, "size", lambda: 5)()
    overflow = max_overflow if max_overflow is not None else configured_overflow(engine.pool) or 0
    notes = []
    with engine.connect() as conn:
        headroom = pool_report(
            conn,
            pool_size=size,
            max_overflow=max(overflow, 0),
            processes=processes,
            reserve=reserve,
        )
        health = index_health(conn)
    stats = {name: pool_stats(p) for name, p in watched.items()}
    if health.slow_queries is None:
        notes.append("pg_stat_statements is not installed: no slow-query list")
    return DoctorReport("postgresql", stats, headroom, health, notes)
