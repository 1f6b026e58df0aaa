"""Server-side history for the dashboard's charts: the outbox backlog, breaker states,
each live rollout's arms and the background jobs per queue, sampled into
``safeship_samples`` with bounded retention.

The control plane runs :meth:`Sampler.run` in its lifespan.  Samples are keyed by time
bucket (``interval`` seconds): every control-plane process may sample, and the first to
write a bucket wins (insert, or nothing on conflict), so three replicas store one row per
bucket and series, not three.  Rows older than ``retention`` are deleted as it goes, so
the table stays bounded.  Migration ``0007_samples`` creates the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from safeship.db._schema import metadata
from safeship.outbox import admin
from safeship.resilience.board import BreakerBoard
from safeship.rollouts._guard import RolloutGuard
from safeship.server.state import ControlPlane

logger = logging.getLogger("safeship.server")

samples = sa.Table(
    "safeship_samples",
    metadata,
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("subject", sa.String(400), primary_key=True),
    sa.Column("metric", sa.String(40), primary_key=True),
    sa.Column("bucket", sa.BigInteger(), primary_key=True),
    sa.Column("value", sa.Float(), nullable=False),
    sa.Index("ix_safeship_samples_bucket", "bucket"),
)

MIN_INTERVAL, MAX_INTERVAL = 1.0, 3600.0
MAX_RETENTION = timedelta(days=30)
#: The most live rollouts sampled per bucket (the rest wait for a later bucket).
MAX_ROLLOUTS = 50
#: The most job queues sampled per bucket.
MAX_QUEUES = 50
#: The most rows one read returns (a chart needs far fewer).
MAX_ROWS = 50_000
#: Rows per insert statement (well under SQLite's bound-parameter limit).
_CHUNK = 500
#: Breaker states as chart levels: 0 lets calls through, 1 trials, 2 turns calls away.
BREAKER_LEVEL = {"half_open": 1.0, "open": 2.0, "forced_open": 2.0}


@dataclass(frozen=True, slots=True)
class Point:
    """One figure of one bucket: e.g. ``("outbox", "", "pending", 12.0)``."""

    kind: str
    subject: str
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One stored series, oldest first: ``(bucket start, value)`` pairs."""

    kind: str
    subject: str
    metric: str
    points: tuple[tuple[datetime, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "metric": self.metric,
            "points": [{"at": at.isoformat(), "value": v} for at, v in self.points],
        }


def outbox_points(engine: sa.Engine) -> list[Point]:
    s = admin.stats(engine)
    figures = {
        "pending": s.pending,
        "dead": s.dead,
        "in_flight": s.in_flight,
        "relays": s.relays,
        "oldest_age_seconds": s.oldest_age_seconds,
    }
    return [Point("outbox", "", k, float(v)) for k, v in figures.items()]


def jobs_points(engine: sa.Engine) -> list[Point]:
    """Background jobs per queue: pending, running, dead, the oldest pending job's age (s)."""
    from safeship import jobs

    out: list[Point] = []
    for q in jobs.stats(engine)[:MAX_QUEUES]:
        out += [
            Point("jobs", q.queue, "pending", float(q.pending)),
            Point("jobs", q.queue, "running", float(q.running)),
            Point("jobs", q.queue, "dead", float(q.dead)),
            Point("jobs", q.queue, "oldest_pending_seconds", float(q.oldest_pending_seconds or 0)),
        ]
    return out


def breaker_points(board: BreakerBoard) -> list[Point]:
    """Each breaker's worst state across the processes reporting it (stale ones skipped)."""
    now = datetime.now(UTC)
    levels: dict[str, float] = {}
    for b in board.all():
        if b.to_dict(now)["stale"]:
            continue
        key = f"{b.service}/{b.name}"
        levels[key] = max(levels.get(key, 0.0), BREAKER_LEVEL.get(b.state, 0.0))
    return [Point("breaker", k, "state", v) for k, v in sorted(levels.items())]


def rollout_points(guard: RolloutGuard) -> list[Point]:
    """Error rate (%) and p95 (ms) of both arms of every live rollout."""
    out: list[Point] = []
    live = [r for r in guard.all() if r.status in ("running", "paused")][:MAX_ROLLOUTS]
    for record in live:
        monitor, _ = guard.monitor(record)
        for arm, figures in monitor.summary().items():
            assert isinstance(figures, dict)
            rate, p95 = figures.get("error_rate"), figures.get("p95")
            if isinstance(rate, float | int):
                out.append(Point("rollout", record.name, f"{arm}.error_rate", 100.0 * rate))
            if isinstance(p95, float | int) and math.isfinite(p95):
                out.append(Point("rollout", record.name, f"{arm}.p95", 1000.0 * p95))
    return out


def plane_points(engine: sa.Engine, board: BreakerBoard, guard: RolloutGuard) -> list[Point]:
    """Everything the charts draw, read now; a source that fails is logged and skipped."""
    points: list[Point] = []
    sources: Sequence[tuple[str, Callable[[], list[Point]]]] = (
        ("outbox", lambda: outbox_points(engine)),
        ("breakers", lambda: breaker_points(board)),
        ("rollouts", lambda: rollout_points(guard)),
        ("jobs", lambda: jobs_points(engine)),
    )
    for name, read in sources:
        try:
            points.extend(read())
        except Exception as exc:  # noqa: BLE001 - one source down must not stop the others
            logger.warning(
                "server.sample_source_failed", extra={"source": name, "error": repr(exc)}
            )
    return points


def bucket_of(moment: float, interval: float) -> int:
    """The start (Unix seconds) of the bucket holding ``moment``."""
    return int(moment // interval * interval)


class Sampler:
    """Writes one bucket of points every ``interval`` seconds and prunes old buckets."""

    def __init__(
        self,
        engine: sa.Engine,
        read: Callable[[], list[Point]],
        *,
        interval: float = 30.0,
        retention: timedelta = timedelta(hours=24),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValueError(f"Sampler interval must be in [{MIN_INTERVAL}, {MAX_INTERVAL}] s")
        if not timedelta(seconds=2 * interval) <= retention <= MAX_RETENTION:
            raise ValueError("Sampler retention must hold two intervals and at most 30 days")
        self.engine = engine
        self.interval = interval
        self.retention = retention
        self._read = read
        self._clock = clock

    def sample_once(self) -> int:
        """Store this bucket's points unless another process did; returns rows written."""
        now = self._clock()
        bucket = bucket_of(now, self.interval)
        points = self._read()
        rows = [
            {"kind": p.kind, "subject": p.subject[:400], "metric": p.metric, "bucket": bucket,
             "value": p.value}
            for p in points if math.isfinite(p.value)
        ]  # fmt: skip
        with self.engine.begin() as conn:
            written = _insert_new(conn, rows) if rows else 0
            cutoff = bucket_of(now - self.retention.total_seconds(), self.interval)
            conn.execute(sa.delete(samples).where(samples.c.bucket < cutoff))
        return written

    async def run(self) -> None:
        """Sample now and then every ``interval`` seconds until cancelled."""
        while True:
            write = asyncio.ensure_future(asyncio.to_thread(self.sample_once))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                # Shutting down: let a write in progress end before the engine is disposed.
                with contextlib.suppress(Exception):
                    await write
                raise
            except Exception as exc:  # noqa: BLE001 - a database outage pauses the history
                logger.warning("server.sample_failed", extra={"error": repr(exc)})
            await asyncio.sleep(self._until_next_bucket())

    def _until_next_bucket(self) -> float:
        now = self._clock()
        return max(0.05, bucket_of(now, self.interval) + self.interval - now)


def _insert_new(conn: sa.Connection, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose key is not stored yet (first writer of a bucket wins)."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        written = 0
        for start in range(0, len(rows), _CHUNK):  # RETURNING counts what this writer added
            stmt = (
                insert(samples)
                .values(rows[start : start + _CHUNK])
                .on_conflict_do_nothing(index_elements=["kind", "subject", "metric", "bucket"])
                .returning(samples.c.bucket)
            )
            written += len(conn.execute(stmt).all())
        return written
    written = 0
    for row in rows:  # other databases: one savepoint per row
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(samples), row)
            written += 1
        except sa.exc.IntegrityError:
            continue
    return written


def read_series(
    bind: sa.Engine | sa.Connection,
    *,
    since: datetime,
    kind: str | tuple[str, ...] | None = None,
    subject: str | None = None,
) -> list[Series]:
    """Stored series from ``since`` on, oldest point first, at most ``MAX_ROWS`` rows;
    ``kind`` is one kind or a tuple of them (a page reads only the kinds it draws, so
    another kind's many rows never use up its ``MAX_ROWS``)."""
    query = sa.select(samples).where(samples.c.bucket >= int(since.timestamp()))
    if isinstance(kind, tuple):
        query = query.where(samples.c.kind.in_(kind))
    elif kind is not None:
        query = query.where(samples.c.kind == kind)
    if subject is not None:
        query = query.where(samples.c.subject == subject)
    query = query.order_by(samples.c.kind, samples.c.subject, samples.c.metric, samples.c.bucket)
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            rows = conn.execute(query.limit(MAX_ROWS)).all()
    else:
        rows = bind.execute(query.limit(MAX_ROWS)).all()
    grouped: dict[tuple[str, str, str], list[tuple[datetime, float]]] = {}
    for r in rows:
        at = datetime.fromtimestamp(r.bucket, tz=UTC)
        grouped.setdefault((r.kind, r.subject, r.metric), []).append((at, float(r.value)))
    return [Series(k, s, m, tuple(pts)) for (k, s, m), pts in grouped.items()]


def plane_sampler(cp: ControlPlane, *, interval: float = 30.0) -> Sampler:
    """The control plane's sampler: the outbox, its breaker board and its rollout guard."""
    return Sampler(
        cp.engine, lambda: plane_points(cp.engine, cp.breakers, cp.rollouts), interval=interval
    )


async def run_until_cancelled(sampler: Sampler) -> None:
    """``sampler.run()`` for a lifespan task: cancelled on shutdown, quietly."""
    with contextlib.suppress(asyncio.CancelledError):
        await sampler.run()
