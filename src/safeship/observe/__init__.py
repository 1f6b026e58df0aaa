"""Observability for the user's service: structured logs, metrics, traces, health checks.

Importing this package configures nothing; call `configure_logging` (or let
`safeship.web.protect` do it) and `safeship.observe.tracing.enable_tracing`.
"""

from safeship.observe.capture import uvicorn_log_config
from safeship.observe.health import (
    HEALTH_MEDIA_TYPE,
    CheckResult,
    HealthRegistry,
    HealthReport,
)
from safeship.observe.logging import (
    ALERT,
    bind_context,
    bound_context,
    configure_logging,
    get_logger,
)
from safeship.observe.masking import PiiMasker
from safeship.observe.metrics import render_latest

__all__ = [
    "ALERT",
    "HEALTH_MEDIA_TYPE",
    "CheckResult",
    "HealthRegistry",
    "HealthReport",
    "PiiMasker",
    "bind_context",
    "bound_context",
    "configure_logging",
    "get_logger",
    "render_latest",
    "uvicorn_log_config",
]
