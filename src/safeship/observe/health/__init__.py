"""Health checks: a registry of component checks behind liveness, readiness and startup.

Reports use the ``application/health+json`` shape; see docs/observability.md.
"""

from safeship.observe.health._model import (
    HEALTH_MEDIA_TYPE,
    KINDS,
    Check,
    CheckFn,
    CheckResult,
    HealthReport,
    Kind,
    Status,
)
from safeship.observe.health._registry import HealthRegistry, run_check
from safeship.observe.health.checks import (
    disk_check,
    event_loop_lag_check,
    nats_check,
    rabbitmq_check,
    redis_check,
    schema_check,
    sql_check,
)

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "KINDS",
    "Check",
    "CheckFn",
    "CheckResult",
    "HealthRegistry",
    "HealthReport",
    "Kind",
    "Status",
    "disk_check",
    "event_loop_lag_check",
    "nats_check",
    "rabbitmq_check",
    "redis_check",
    "run_check",
    "schema_check",
    "sql_check",
]
