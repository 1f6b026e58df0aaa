"""The stored flags as Prometheus figures, read at scrape time by the control plane.

Evaluations are counted where they happen, in each app process's live client
(``safeship_flag_evaluations_total``, see `safeship.flags.live`); this module reads what
the database knows: how many flags, how many on, the kill switch and the store version.
"""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from safeship.db._schema import flag_state, flags
from safeship.flags._records import stored_enabled

__all__ = ["read_stored"]


def read_stored(conn: sa.Connection) -> list[Metric]:
    """Flags by state (enabled/disabled), never evaluated, the kill switch and the version."""
    rows = conn.execute(sa.select(flags.c.definition, flags.c.last_evaluated_at)).all()
    enabled = sum(1 for row in rows if stored_enabled(row.definition))
    state = conn.execute(sa.select(flag_state.c.version, flag_state.c.killed_at)).first()
    by_state = GaugeMetricFamily(
        "safeship_flags", "Stored flags by state: enabled or disabled.", labels=["state"]
    )
    by_state.add_metric(["enabled"], enabled)
    by_state.add_metric(["disabled"], len(rows) - enabled)
    never = GaugeMetricFamily(
        "safeship_flags_never_evaluated", "Stored flags no app has reported evaluating yet."
    )
    never.add_metric([], sum(1 for row in rows if row.last_evaluated_at is None))
    killed = GaugeMetricFamily(
        "safeship_flags_killed",
        "1 while the kill switch is engaged (flags held at their safe value).",
    )
    killed.add_metric([], 0 if state is None or state.killed_at is None else 1)
    version = GaugeMetricFamily(
        "safeship_flags_store_version", "Version of the stored flag state; grows with each change."
    )
    version.add_metric([], 0 if state is None else state.version)
    return [by_state, never, killed, version]
