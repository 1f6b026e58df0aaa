"""A health check for the jobs: warn when the oldest runnable job waits too long, when dead
letters pile up, and on PostgreSQL when the hot table bloats (dead tuples) or a long
transaction holds back the xmin horizon (so vacuum cannot clean it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from safeship.jobs import _schema as schema
from safeship.jobs._store_sqlite import read_time
from safeship.observe.health import CheckResult

__all__ = ["jobs_check"]

_OLDEST_XACT = sa.text(
    "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL"
)
_DEAD_TUPLES = sa.text(
    "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname = 'safeship_jobs'"
)


def _oldest_runnable(conn: sa.Connection) -> float:
    jobs = schema.jobs
    now = datetime.now(UTC)
    oldest = conn.execute(
        sa.select(sa.func.min(jobs.c.run_at)).where(jobs.c.state == "pending", jobs.c.run_at <= now)
    ).scalar()
    return 0.0 if oldest is None else max(0.0, (now - read_time(oldest)).total_seconds())


def jobs_check(
    engine: sa.Engine,
    *,
    max_wait: float = 60.0,
    max_dead: int = 0,
    max_transaction_age: float = 300.0,
    max_dead_tuples: int = 100_000,
) -> Callable[[], CheckResult]:
    """A check function for :class:`~safeship.observe.health.HealthRegistry`."""
    if max_wait <= 0 or max_transaction_age <= 0 or max_dead < 0 or max_dead_tuples < 0:
        raise ValueError("jobs_check thresholds must be positive")

    def check_jobs() -> CheckResult:
        with engine.connect() as conn:
            waited = _oldest_runnable(conn)
            dead = conn.execute(
                sa.select(sa.func.count()).where(schema.history.c.state == "dead")
            ).scalar_one()
            problems = []
            if waited > max_wait:
                problems.append(
                    f"the oldest runnable job has waited {waited:.0f}s: are workers up?"
                )
            if dead > max_dead:
                problems.append(f"{dead} dead letters: inspect with `safeship jobs list`")
            if engine.dialect.name == "postgresql":
                age = float(conn.execute(_OLDEST_XACT).scalar_one())
                tuples = int(conn.execute(_DEAD_TUPLES).scalar_one())
                if age > max_transaction_age:
                    problems.append(f"a transaction open for {age:.0f}s holds back vacuum")
                if tuples > max_dead_tuples:
                    problems.append(
                        f"safeship_jobs has {tuples} dead tuples: is vacuum keeping up?"
                    )
        return CheckResult(
            status="warn" if problems else "pass",
            output="; ".join(problems) or f"oldest runnable job waited {waited:.1f}s",
            observed_value=waited,
            observed_unit="s",
            component_type="datastore",
        )

    return check_jobs
