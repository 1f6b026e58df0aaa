"""The breaker board as Prometheus metrics, read at scrape time by the control plane.

Counts are per service, breaker and state over the processes that reported in the last
minute (``STALE_AFTER``), so the series stay bounded by breakers, not by process ids;
manual modes come from the overrides table.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from safeship.db._schema import breaker_overrides, breakers
from safeship.resilience.board import STALE_AFTER

__all__ = ["MAX_SERIES", "read_stored"]

#: At most this many (service, breaker, state) series per family.
MAX_SERIES = 1000


def read_stored(conn: sa.Connection) -> list[Metric]:
    """Processes per breaker and state, stale reports, and the manual mode of each breaker."""
    b = breakers.c
    fresh = b.reported_at > datetime.now(UTC) - STALE_AFTER
    reporting = GaugeMetricFamily(
        "safeship_breakers",
        "Processes whose breaker is in each state (closed, open, half_open, forced_open, "
        "disabled, metrics_only), as reported in the last minute.",
        labels=["service", "breaker", "state"],
    )
    query = (
        sa.select(b.service, b.name, b.state, sa.func.count())
        .where(fresh)
        .group_by(b.service, b.name, b.state)
        .order_by(b.service, b.name, b.state)
        .limit(MAX_SERIES)
    )
    for service, name, state, count in conn.execute(query).all():
        reporting.add_metric([service, name, state], count)
    stale = GaugeMetricFamily(
        "safeship_breaker_stale_reports",
        "Breaker reports older than a minute (processes that stopped reporting).",
    )
    stale.add_metric([], conn.execute(sa.select(sa.func.count()).where(~fresh)).scalar_one())
    return [reporting, stale, _modes(conn)]


def _modes(conn: sa.Connection) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "safeship_breaker_mode",
        "1 for the manual mode operators set on a breaker (forced_open, disabled, "
        "metrics_only); breakers in automatic mode have no series.",
        labels=["service", "breaker", "mode"],
    )
    o = breaker_overrides.c
    query = (
        sa.select(o.service, o.name, o.mode)
        .where(o.mode != "automatic")
        .order_by(o.service, o.name)
        .limit(MAX_SERIES)
    )
    for service, name, mode in conn.execute(query).all():
        family.add_metric([service, name, mode], 1)
    return family
