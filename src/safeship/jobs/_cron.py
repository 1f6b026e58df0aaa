"""Periodic jobs: one run per tick across the fleet.

A tick of an entry that runs ``every`` seconds starts at each multiple of ``every`` since
the epoch; a tick of a ``schedule`` entry is each instant its cron expression names
(``_cron_expr``).  A scheduler takes the latest tick at or before now by moving the
entry's ``last_tick`` forward with a conditional write, and enqueues the job in that same
transaction: of any number of schedulers, exactly one write succeeds per tick, and the
job exists iff the tick was taken.  Missed ticks (every scheduler down) are not replayed
as a burst: the latest missed tick runs once, then ticks run as usual.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from safeship.jobs._enqueue import sqlite_time, write_sync
from safeship.jobs._registry import Cron, Jobs

__all__ = ["fire_due", "tick_of"]

_TAKE_PG = sa.text(
    "INSERT INTO safeship_jobs_cron (name, last_tick) VALUES (:name, :tick) "
    "ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick "
    "WHERE safeship_jobs_cron.last_tick < excluded.last_tick RETURNING name"
)


def tick_of(entry: Cron, now: float) -> datetime:
    """The start of the tick ``now`` (Unix seconds) falls in: the latest tick at or before it."""
    if entry.schedule is not None:
        return entry.schedule.latest_at_or_before(datetime.fromtimestamp(now, UTC))
    return datetime.fromtimestamp(now // entry.every * entry.every, UTC)


def fire_due(jobs: Jobs, engine: sa.Engine, now: float) -> list[str]:
    """Enqueue every cron entry whose current tick nobody has taken yet; the names fired."""
    fired = []
    sqlite = engine.dialect.name == "sqlite"
    for entry in jobs.crons.values():
        tick = tick_of(entry, now)
        with engine.begin() as conn:
            value: object = sqlite_time(tick) if sqlite else tick
            taken = conn.execute(_TAKE_PG, {"name": entry.name, "tick": value}).first()
            if taken is None:
                continue
            task = jobs.get(entry.task)
            write_sync(conn, "sa", [task.row(entry.args)])
            fired.append(entry.name)
    return fired
