"""A health check for the outbox: warn when the oldest pending event is too old, when
dead letters pile up, or (PostgreSQL) when a long transaction holds back vacuum."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from safeship.observe.health import CheckResult
from safeship.outbox import _metrics as metrics
from safeship.outbox.admin import stats

__all__ = ["outbox_check"]

_OLDEST_XACT = sa.text(
    "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL"
)


def outbox_check(
    engine: sa.Engine,
    *,
    max_oldest_age: float = 60.0,
    max_dead: int = 0,
    max_transaction_age: float = 300.0,
) -> Callable[[], CheckResult]:
    """A check function for :class:`~safeship.observe.health.HealthRegistry`; it also
    updates the backlog gauges."""
    if max_oldest_age <= 0 or max_transaction_age <= 0 or max_dead < 0:
        raise ValueError("outbox_check thresholds must be positive")

    def check_outbox() -> CheckResult:
        reading = stats(engine)
        metrics.backlog(reading.pending, reading.oldest_age_seconds, reading.dead)
        problems = []
        if reading.oldest_age_seconds > max_oldest_age:
            problems.append(
                f"oldest pending event is {reading.oldest_age_seconds:.0f}s old "
                f"(> {max_oldest_age:.0f}s): is a relay running and the broker up?"
            )
        if reading.dead > max_dead:
            problems.append(f"{reading.dead} dead letters: inspect with `safeship outbox peek`")
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                age = float(conn.execute(_OLDEST_XACT).scalar_one())
            if age > max_transaction_age:
                problems.append(f"a transaction open for {age:.0f}s holds back vacuum")
        return CheckResult(
            status="warn" if problems else "pass",
            output="; ".join(problems) or f"{reading.pending} pending",
            observed_value=reading.oldest_age_seconds,
            observed_unit="s",
            component_type="datastore",
        )

    return check_outbox
