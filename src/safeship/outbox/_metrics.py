"""Prometheus metrics of the outbox: a relay's own counters (default registry, created on
first use) and the stored figures the control plane reads at scrape time (`read_stored`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from safeship.outbox import _schema as schema
from safeship.outbox._model import Event, Outcome, Status
from safeship.outbox.admin import stats

__all__ = ["backlog", "dead", "leases", "published", "read_stored", "sink_failed"]

#: A relay counts as alive with a heartbeat this recent (as ``admin.stats`` counts them).
RELAY_LIVE = timedelta(seconds=30)
#: At most this many relays get their own series (the newest heartbeats).
MAX_RELAY_SERIES = 100

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "published": Counter("safeship_outbox_published_total", "Events the broker confirmed."),
        "failed": Counter(
            "safeship_outbox_failed_total", "Event publish attempts that failed.", ["reason"]
        ),
        "dead": Counter("safeship_outbox_dead_total", "Events moved to the dead-letter table."),
        "latency": Histogram(
            "safeship_outbox_publish_seconds",
            "Time from handing a batch to the sink to its confirmations.",
            buckets=_LATENCY_BUCKETS,
        ),
        "lag": Histogram(
            "safeship_outbox_delivery_lag_seconds",
            "Time from staging an event to the broker's confirmation.",
            buckets=_LATENCY_BUCKETS,
        ),
        "backlog": Gauge("safeship_outbox_backlog", "Pending events in the outbox table."),
        "oldest": Gauge("safeship_outbox_oldest_age_seconds", "Age of the oldest pending event."),
        "dead_now": Gauge("safeship_outbox_dead_letters", "Events in the dead-letter table."),
        "leases": Gauge("safeship_outbox_leases", "Partitions held by a relay.", ["relay"]),
    }


def published(events: Sequence[Event], outcomes: Sequence[Outcome], seconds: float) -> None:
    """Count a batch's outcomes and observe its publish latency."""
    m = _metrics()
    m["latency"].observe(seconds)
    ok = sum(1 for o in outcomes if o.status is Status.DELIVERED)
    failed = sum(1 for o in outcomes if o.status in (Status.RETRY, Status.PERMANENT))
    if ok:
        m["published"].inc(ok)
        newest = max(e.created_at for e in events)
        m["lag"].observe(max(0.0, (datetime.now(UTC) - newest).total_seconds()))
    if failed:
        m["failed"].labels("rejected").inc(failed)


def sink_failed(count: int) -> None:
    _metrics()["failed"].labels("unavailable").inc(count)


def dead(count: int) -> None:
    _metrics()["dead"].inc(count)


def leases(relay_id: str, count: int) -> None:
    _metrics()["leases"].labels(relay_id).set(count)


def backlog(pending: int, oldest_age: float, dead_letters: int) -> None:
    """Set the backlog gauges from a :func:`safeship.outbox.admin.stats` reading."""
    m = _metrics()
    m["backlog"].set(pending)
    m["oldest"].set(oldest_age)
    m["dead_now"].set(dead_letters)


def read_stored(conn: sa.Connection) -> list[Metric]:
    """The outbox as stored: backlog, retrying, oldest pending age, dead letters, in-flight
    events, delivery rate and the live relays (heartbeat in the last 30 s), each with its
    heartbeat age and the events it confirmed."""
    reading = stats(conn)
    families = [
        _gauge("safeship_outbox_backlog", "Pending events in the outbox table.", reading.pending),
        _gauge(
            "safeship_outbox_retrying",
            "Pending events that failed at least once and wait for a retry.",
            reading.retrying,
        ),
        _gauge(
            "safeship_outbox_oldest_age_seconds",
            "Age of the oldest pending event.",
            reading.oldest_age_seconds,
        ),
        _gauge("safeship_outbox_dead_letters", "Events in the dead-letter table.", reading.dead),
        _gauge(
            "safeship_outbox_in_flight",
            "Events live relays claimed and the broker has not confirmed yet.",
            reading.in_flight,
        ),
        _gauge(
            "safeship_outbox_delivered_per_second",
            "Events confirmed per second over the live relays' last ~10 s.",
            reading.delivered_per_second,
        ),
        _gauge("safeship_outbox_relays_alive", "Relays with a recent heartbeat.", reading.relays),
        _gauge(
            "safeship_outbox_leased_partitions",
            "Partitions held by live relays (of 64).",
            reading.leased_partitions,
        ),
    ]
    return families + _relay_families(conn)


def _relay_families(conn: sa.Connection) -> list[Metric]:
    r, now = schema.relays, datetime.now(UTC)
    rows = conn.execute(
        sa.select(r.c.relay_id, r.c.heartbeat_at, r.c.published)
        .where(r.c.heartbeat_at > now - RELAY_LIVE)
        .order_by(r.c.heartbeat_at.desc())
        .limit(MAX_RELAY_SERIES)
    ).all()
    age = GaugeMetricFamily(
        "safeship_outbox_relay_heartbeat_age_seconds",
        "Seconds since each live relay's last heartbeat.",
        labels=["relay"],
    )
    confirmed = CounterMetricFamily(
        "safeship_outbox_relay_published",
        "Events each live relay had confirmed at its last heartbeat, since it started.",
        labels=["relay"],
    )
    for row in rows:
        beat = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(tzinfo=UTC)
        age.add_metric([row.relay_id], max(0.0, (now - beat).total_seconds()))
        confirmed.add_metric([row.relay_id], row.published or 0)
    return [age, confirmed]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family
