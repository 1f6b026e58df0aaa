"""Observability for the user's service: structured logs, metrics, traces, health checks.

Importing this package configures nothing; call `configure_logging` (or let
`safeship.web.protect` do it) and `safeship.observe.tracing.enable_tracing`.
"""

from safeship.observe._capture import capture_process_output, uvicorn_log_config
from safeship.observe._logging import (
    ALERT,
    bind_context,
    bound_context,
    configure_logging,
    get_logger,
)
from safeship.observe._masking import DEFAULT_MASK_KEYS, MaskPattern, PiiMasker
from safeship.observe._metrics import (
    MetricsServer,
    grafana_dashboard,
    mark_process_dead,
    render_latest,
)
from safeship.observe.health import (
    HEALTH_MEDIA_TYPE,
    CheckResult,
    HealthRegistry,
    HealthReport,
)

__all__ = [
    "ALERT",
    "DEFAULT_MASK_KEYS",
    "HEALTH_MEDIA_TYPE",
    "CheckResult",
    "HealthRegistry",
    "HealthReport",
    "MaskPattern",
    "MetricsServer",
    "PiiMasker",
    "bind_context",
    "bound_context",
    "capture_process_output",
    "configure_logging",
    "get_logger",
    "grafana_dashboard",
    "mark_process_dead",
    "render_latest",
    "uvicorn_log_config",
]
