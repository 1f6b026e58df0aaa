"""Prometheus metrics of the outbox (default registry, created on first use)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from safeship.outbox.model import Event, Outcome, Status

__all__ = ["backlog", "dead", "leases", "published", "sink_failed"]

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
