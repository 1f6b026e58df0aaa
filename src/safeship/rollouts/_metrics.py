"""The guard's stored figures as Prometheus metrics, read at scrape time by the control plane.

Per rollout (running and paused ones, and those that changed in the last day; at most
``MAX_ROLLOUTS``): its status, step and candidate share; per live rollout and arm: the
requests and errors of the windows the fleet ships (counters kept by `RolloutFigures`)
and latency quantiles of the current step's newest ``LATENCY_WINDOWS`` windows.
Decisions are counted from the decision table, whichever process made them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from safeship.rollouts._monitor import ArmWindow
from safeship.rollouts._schema import rollout_decisions, rollout_windows, rollouts
from safeship.rollouts._stats import LatencyHistogram

__all__ = ["RolloutFigures"]

MAX_ROLLOUTS = 100
CATCH_UP_WINDOWS = 2000
LATENCY_WINDOWS = 500
RECENT = timedelta(days=1)
LIVE = ("running", "paused")
ARMS = ("control", "candidate")
QUANTILES = (0.5, 0.95, 0.99)


class RolloutFigures:
    """Reads the guard's tables at each scrape; keeps each live rollout's running arm
    totals, so a scrape sums only the windows shipped since the previous one (at most
    ``CATCH_UP_WINDOWS``, the rest on the next scrapes): the cost follows the scrape
    interval, not the rollout's age. Counting starts at the current step's first window
    when a rollout is first seen; a restart of the control plane restarts the counters."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, tuple[int, ...]]] = {}

    def read(self, conn: sa.Connection) -> list[Metric]:
        """Rollouts by status, per-rollout state, per-arm counts and latency, decisions."""
        rows = _recent_rollouts(conn)
        live = [row for row in rows if row["status"] in LIVE]
        totals = {row["name"]: self._advance(conn, row) for row in live}
        self._seen = {name: self._seen[name] for name in totals}  # forget finished ones
        return [
            _by_status(conn),
            *_per_rollout(rows),
            *_arm_counts(totals),
            _arm_latency(conn, live),
            _decisions(conn),
        ]

    def _advance(self, conn: sa.Connection, row: sa.RowMapping) -> tuple[int, ...]:
        name = row["name"]
        start = (int(row["step_first_window"]) - 1, (0, 0, 0, 0))
        last, totals = self._seen.get(name, start)
        w = rollout_windows.c
        batch = (
            sa.select(w.id, w.control, w.candidate)
            .where(w.rollout == name, w.id > last)
            .order_by(w.id)
            .limit(CATCH_UP_WINDOWS)
            .subquery()
        )
        sums = [
            sa.func.coalesce(sa.func.sum(batch.c[arm][field].as_integer()), 0)
            for arm in ARMS
            for field in ("requests", "errors")
        ]
        newest, *added = conn.execute(sa.select(sa.func.max(batch.c.id), *sums)).one()
        if newest is not None:
            totals = tuple(t + int(a) for t, a in zip(totals, added, strict=True))
            self._seen[name] = (int(newest), totals)
        else:
            self._seen.setdefault(name, (last, totals))
        return totals


def _recent_rollouts(conn: sa.Connection) -> Sequence[sa.RowMapping]:
    r = rollouts.c
    since = datetime.now(UTC) - RECENT
    query = (
        sa.select(r.name, r.status, r.step, r.plan, r.step_first_window)
        .where(sa.or_(r.status.in_(LIVE), r.updated_at > since))
        .order_by(r.updated_at.desc())
        .limit(MAX_ROLLOUTS)
    )
    return conn.execute(query).mappings().all()


def _by_status(conn: sa.Connection) -> GaugeMetricFamily:
    family = GaugeMetricFamily("safeship_rollouts", "Stored rollouts by status.", labels=["status"])
    query = sa.select(rollouts.c.status, sa.func.count()).group_by(rollouts.c.status)
    for status, count in conn.execute(query).all():
        family.add_metric([str(status)], count)
    return family


def _per_rollout(rows: Sequence[sa.RowMapping]) -> list[Metric]:
    status = GaugeMetricFamily(
        "safeship_rollout_status",
        "1 for the status each rollout is in (running, paused, promoted, rolled_back, ...).",
        labels=["rollout", "status"],
    )
    step = GaugeMetricFamily(
        "safeship_rollout_step", "Index of the plan step each rollout is at.", labels=["rollout"]
    )
    share = GaugeMetricFamily(
        "safeship_rollout_candidate_ratio",
        "Share of traffic the candidate gets now (0 to 1; 0 once rolled back or aborted).",
        labels=["rollout"],
    )
    for row in rows:
        status.add_metric([row["name"], str(row["status"])], 1)
        step.add_metric([row["name"]], row["step"])
        share.add_metric([row["name"]], _percent(row) / 100.0)
    return [status, step, share]


def _percent(row: sa.RowMapping) -> float:
    """The step's percentage, read leniently: a plan in an unexpected shape reads as 0."""
    if row["status"] in ("rolled_back", "aborted"):
        return 0.0
    steps = row["plan"].get("steps") if isinstance(row["plan"], Mapping) else None
    if isinstance(steps, list) and 0 <= row["step"] < len(steps):
        value = steps[row["step"]]
        return float(value) if isinstance(value, int | float) else 0.0
    return 0.0


def _arm_counts(totals: Mapping[str, tuple[int, ...]]) -> list[Metric]:
    requests = CounterMetricFamily(
        "safeship_rollout_arm_requests",
        "Requests each arm served, counted from the windows the fleet ships.",
        labels=["rollout", "arm"],
    )
    errors = CounterMetricFamily(
        "safeship_rollout_arm_errors",
        "Failed requests of each arm, counted from the windows the fleet ships.",
        labels=["rollout", "arm"],
    )
    for name, values in sorted(totals.items()):
        for i, arm in enumerate(ARMS):
            requests.add_metric([name, arm], values[2 * i])
            errors.add_metric([name, arm], values[2 * i + 1])
    return [requests, errors]


def _arm_latency(conn: sa.Connection, live: Sequence[sa.RowMapping]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "safeship_rollout_arm_latency_seconds",
        f"Latency quantiles of each arm in the current step (its newest {LATENCY_WINDOWS} "
        "windows; upper edge of the guard's bucket).",
        labels=["rollout", "arm", "quantile"],
    )
    w = rollout_windows.c
    for row in live:
        query = (
            sa.select(w.control, w.candidate)
            .where(w.rollout == row["name"], w.id >= row["step_first_window"])
            .order_by(w.id.desc())
            .limit(LATENCY_WINDOWS)
        )
        histograms = {arm: LatencyHistogram() for arm in ARMS}
        for window in conn.execute(query).all():
            for arm in ARMS:
                histograms[arm].merge(_histogram(getattr(window, arm)))
        for arm, histogram in histograms.items():
            for q in QUANTILES:
                value = histogram.quantile(q)
                if value is not None:
                    family.add_metric([row["name"], arm, str(q)], value)
    return family


def _histogram(raw: object) -> Mapping[int, int]:
    return ArmWindow.from_dict(raw).histogram if isinstance(raw, Mapping) else {}


def _decisions(conn: sa.Connection) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "safeship_rollout_stored_decisions",
        "Decisions in the database by kind (advanced, rolled_back, promoted, ...), "
        "whichever process made them.",
        labels=["kind"],
    )
    d = rollout_decisions.c
    for kind, count in conn.execute(sa.select(d.kind, sa.func.count()).group_by(d.kind)).all():
        family.add_metric([str(kind)], count)
    return family
