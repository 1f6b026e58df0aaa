"""Gathering the overview: read flags, rollouts, breakers, the outbox, recent alerts and
the database into :class:`~safeship.server._health_summary.Readings`, then judge them.

Each section is read on its own, so a failing one shows as unreadable (and fails the
verdict) while the others still show.  The rules themselves live in ``_health_summary``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from safeship.db._pool import configured_overflow
from safeship.db._schema import audit
from safeship.flags import _authoring as authoring
from safeship.outbox import admin
from safeship.server._health_summary import (
    AlertView,
    ArmView,
    BreakerView,
    DatabaseView,
    FlagView,
    IdempotencyView,
    OutboxView,
    Readings,
    RolloutView,
    Summary,
    summarize,
)
from safeship.server._samples import Series, read_series
from safeship.server.state import ControlPlane

logger = logging.getLogger("safeship.server")
T = TypeVar("T")
#: Rollout decisions that an operator should see on the overview.
ALERT_DECISIONS = ("rolled_back", "aborted", "paused")
#: Audited actions that are alerts in themselves.
ALERT_ACTIONS = ("flags.kill", "rollouts.emergency", "outbox.purge")
ALERT_HISTORY = timedelta(hours=24)
MAX_ALERTS = 20
#: The most rollouts the overview judges and shows (each reads its observation windows).
MAX_ROLLOUTS = 50


def _read(section: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - one unreadable section must not hide the rest
        logger.warning(
            "server.overview_section_failed", extra={"section": section, "error": repr(exc)}
        )
        return None


def read_flags(cp: ControlPlane) -> list[FlagView]:
    return [
        FlagView(
            name=f.name,
            enabled=f.enabled,
            rollout_percent=authoring.rollout_percent(f.definition),
            updated_at=f.updated_at,
            updated_by=f.updated_by,
        )
        for f in cp.flags.all()
    ]


def _arm(figures: object) -> ArmView:
    d = figures if isinstance(figures, dict) else {}
    rate, p95 = d.get("error_rate"), d.get("p95")
    return ArmView(
        requests=int(d.get("requests") or 0),
        error_rate=float(rate) if isinstance(rate, int | float) else None,
        p95=float(p95) if isinstance(p95, int | float) else None,
    )


def read_rollouts(cp: ControlPlane) -> list[RolloutView]:
    """Live rollouts first, then the finished ones, at most ``MAX_ROLLOUTS`` in all."""
    records = cp.rollouts.all()
    live = [r for r in records if r.status in ("running", "paused")]
    done = [r for r in records if r.status not in ("running", "paused")]
    out = []
    for record in (live + done)[:MAX_ROLLOUTS]:
        monitor, _ = cp.rollouts.monitor(record)
        arms = monitor.summary()
        out.append(
            RolloutView(
                name=record.name,
                status=record.status,
                mode=record.mode,
                percent=float(record.to_dict()["percent"]),
                control=_arm(arms.get("control")),
                candidate=_arm(arms.get("candidate")),
                breach=monitor.verdict().breach,
            )
        )
    return out


def _since(snapshot: dict[str, Any]) -> datetime | None:
    transitions = snapshot.get("transitions") or []
    if not transitions:
        return None
    at = transitions[-1].get("at")
    return datetime.fromtimestamp(at, tz=UTC) if isinstance(at, int | float) else None


def read_breakers(cp: ControlPlane, now: datetime) -> list[BreakerView]:
    return [
        BreakerView(
            service=b.service,
            name=b.name,
            instance=b.instance,
            state=b.state,
            mode=b.mode,
            since=_since(b.snapshot),
            stale=bool(b.to_dict(now)["stale"]),
        )
        for b in cp.breakers.all()
    ]


def read_alerts(cp: ControlPlane, now: datetime) -> list[AlertView]:
    since = now - ALERT_HISTORY
    alerts = [
        AlertView(d.at, d.kind, f"rollout {d.rollout}", d.actor, d.reason)
        for d in cp.rollouts.recent_decisions(limit=100)
        if d.kind in ALERT_DECISIONS and d.at >= since
    ]
    query = (
        sa.select(audit.c.at, audit.c.action, audit.c.target, audit.c.actor, audit.c.reason)
        .where(audit.c.action.in_(ALERT_ACTIONS), audit.c.at >= since)
        .order_by(audit.c.id.desc())
        .limit(MAX_ALERTS)
    )
    with cp.engine.connect() as conn:
        for row in conn.execute(query):
            at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
            alerts.append(AlertView(at, row.action, row.target, row.actor, row.reason))
    alerts.sort(key=lambda a: a.at, reverse=True)
    return alerts[:MAX_ALERTS]


IDEMPOTENCY_TABLE = "safeship_idempotency"


def read_idempotency(cp: ControlPlane) -> IdempotencyView | None:
    """Counts of the SQL key store's table, by the database's clock; None when the table
    is not in the control plane's database."""
    try:
        with cp.engine.connect() as conn:
            if not sa.inspect(conn).has_table(IDEMPOTENCY_TABLE):
                return None
            from safeship.idempotency._schema import idempotency as t
            from safeship.idempotency._sql import now_ms

            now = now_ms(conn.dialect.name)
            live = t.c.expires_at > now
            lapsed = sa.and_(t.c.state == "in_flight", t.c.lease_until <= now)
            running = sa.and_(t.c.state == "in_flight", t.c.lease_until > now)
            unknown = sa.or_(t.c.state == "unknown", lapsed)
            recent = sa.and_(t.c.state == "done", t.c.created_at > now - 3_600_000)

            def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
                return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

            row = conn.execute(
                sa.select(count(running), count(unknown), count(recent)).where(live)
            ).one()
    except Exception as exc:  # noqa: BLE001 - one unreadable section must not hide the rest
        logger.warning(
            "server.overview_section_failed", extra={"section": "idempotency", "error": repr(exc)}
        )
        return IdempotencyView(readable=False)
    return IdempotencyView(int(row[0]), int(row[1]), int(row[2]))


def read_database(cp: ControlPlane) -> DatabaseView:
    """Reachable or not, the control plane's own pool, and lock waits on PostgreSQL."""
    pool = cp.engine.pool
    in_use, idle, capacity = _pool_figures(pool)
    try:
        with cp.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            waiting = None
            if conn.dialect.name == "postgresql":
                waiting = int(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    ).scalar_one()
                )
    except Exception as exc:  # noqa: BLE001 - an outage is a reading, not an error here
        return DatabaseView(reachable=False, detail=type(exc).__name__)
    return DatabaseView(True, in_use, idle, capacity, waiting, cp.engine.dialect.name)


#: The span the overview's cache figures count (each process's counters are cumulative).
CACHE_WINDOW = timedelta(hours=1)
#: How far back the cache history is read (the chart spans it).
CACHE_HISTORY = timedelta(hours=6)
#: The most cache namespaces the overview shows.
MAX_CACHES = 50
CACHE_COUNTERS = ("hits", "misses", "stale_served", "errors")


@dataclasses.dataclass(frozen=True, slots=True)
class CacheView:
    """One cache namespace of one service, summed over its reporting processes, for the
    last ``CACHE_WINDOW``."""

    service: str
    namespace: str
    instances: int
    hits: int
    misses: int
    stale_served: int
    errors: int
    hit_ratio: float | None
    reported_at: datetime


def _increments(points: tuple[tuple[datetime, float], ...]) -> list[tuple[datetime, float]]:
    """What a cumulative counter added at each point after the first (a drop, when a
    cache of the process was collected, adds nothing)."""
    return [(at, max(0.0, v - points[i][1])) for i, (at, v) in enumerate(points[1:])]


def cache_figures(
    stored: list[Series], now: datetime, window: timedelta = CACHE_WINDOW
) -> tuple[list[CacheView], dict[tuple[str, str], list[tuple[datetime, float]]]]:
    """The cache rows of the sample history as per-namespace figures for the last
    ``window`` and, per namespace, its hit ratio (%) per time bucket.

    Subjects are ``service/instance/namespace``; each instance's counters are cumulative
    since it started, so a window's count is the rise since the instance's last report
    before the window (all of it for an instance first seen inside the window).
    """
    start = now - window
    counts: dict[tuple[str, str], dict[str, float]] = {}
    instances: dict[tuple[str, str], set[str]] = {}
    latest: dict[tuple[str, str], datetime] = {}
    per_bucket: dict[tuple[str, str], dict[datetime, list[float]]] = {}
    for s in stored:
        if s.kind != "cache" or s.metric not in CACHE_COUNTERS or not s.points:
            continue
        service, _, rest = s.subject.partition("/")
        instance, _, namespace = rest.rpartition("/")
        key = (service, namespace)
        before = [v for at, v in s.points if at <= start]
        inside = [v for at, v in s.points if at > start]
        if inside:
            base = before[-1] if before else 0.0
            total = 0.0
            for v in inside:
                total += max(0.0, v - base)
                base = v
            figures = counts.setdefault(key, dict.fromkeys(CACHE_COUNTERS, 0.0))
            figures[s.metric] += total
            instances.setdefault(key, set()).add(instance)
            latest[key] = max(latest.get(key, s.points[-1][0]), s.points[-1][0])
        if s.metric in ("hits", "misses"):
            slot = 0 if s.metric == "hits" else 1
            buckets = per_bucket.setdefault(key, {})
            for at, added in _increments(s.points):
                buckets.setdefault(at, [0.0, 0.0])[slot] += added
    views = []
    for key, figures in sorted(counts.items())[:MAX_CACHES]:
        looked = figures["hits"] + figures["misses"]
        views.append(
            CacheView(
                service=key[0],
                namespace=key[1],
                instances=len(instances[key]),
                hits=int(figures["hits"]),
                misses=int(figures["misses"]),
                stale_served=int(figures["stale_served"]),
                errors=int(figures["errors"]),
                hit_ratio=figures["hits"] / looked if looked else None,
                reported_at=latest[key],
            )
        )
    ratios = {
        key: [(at, 100.0 * h / (h + m)) for at, (h, m) in sorted(buckets.items()) if h + m]
        for key, buckets in per_bucket.items()
    }
    return views, ratios


def read_caches(
    cp: ControlPlane, now: datetime
) -> tuple[list[CacheView], dict[tuple[str, str], list[tuple[datetime, float]]]]:
    """The reported cache figures (``safeship.cache.CacheReporter``) from the history."""
    stored = read_series(cp.engine, since=now - CACHE_HISTORY, kind="cache")
    return cache_figures(stored, now)


def _pool_figures(pool: Any) -> tuple[int | None, int | None, int | None]:
    checkedout, checkedin = getattr(pool, "checkedout", None), getattr(pool, "checkedin", None)
    if not callable(checkedout) or not callable(checkedin):
        return None, None, None
    size, overflow = getattr(pool, "size", None), configured_overflow(pool)
    capacity = None
    if callable(size) and isinstance(overflow, int) and overflow >= 0:
        capacity = int(size()) + overflow
    return int(checkedout()), int(checkedin()), capacity


def gather(cp: ControlPlane, now: datetime | None = None) -> Readings:
    now = now or datetime.now(UTC)
    database = read_database(cp)
    if not database.reachable:  # every other section would wait out its own timeout
        return Readings(now, database, None, None, None, None, None, None)
    stats = _read("outbox", lambda: admin.stats(cp.engine))
    outbox = None
    if stats is not None:
        outbox = OutboxView(
            pending=stats.pending,
            dead=stats.dead,
            oldest_age_seconds=stats.oldest_age_seconds,
            relays=stats.relays,
            in_flight=stats.in_flight,
        )
    return Readings(
        now=now,
        database=database,
        flags=_read("flags", lambda: read_flags(cp)),
        killed_at=_read("flags", cp.flags.killed_at),
        rollouts=_read("rollouts", lambda: read_rollouts(cp)),
        breakers=_read("breakers", lambda: read_breakers(cp, now)),
        outbox=outbox,
        alerts=_read("alerts", lambda: read_alerts(cp, now)),
        idempotency=read_idempotency(cp),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def overview(cp: ControlPlane, now: datetime | None = None) -> dict[str, Any]:
    """The overview as JSON-able data: the verdict, each section's status and findings,
    and the readings behind them (ISO 8601 times)."""
    readings = gather(cp, now)
    summary: Summary = summarize(readings)
    body = _plain(dataclasses.asdict(readings))
    caches = None
    if readings.database.reachable:
        caches = _read("cache", lambda: read_caches(cp, readings.now))
    return {
        "verdict": summary.verdict,
        "generated_at": body.pop("now"),
        "sections": summary.to_dict()["sections"],
        **body,
        "cache": None if caches is None else [_plain(dataclasses.asdict(v)) for v in caches[0]],
    }
