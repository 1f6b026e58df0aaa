"""``safeship settings``: every ``SAFESHIP_*`` variable with its default and meaning.

Errors about an unknown variable point here; a test keeps this list and the
``Settings`` fields the same.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from safeship.cli._common import out
from safeship.settings import ENV_PREFIX, FLAG_PREFIX, Settings

SETTING_DOCS: dict[str, str] = {
    "environment": "development or production (production refuses unsafe settings)",
    "database_url": "sqlite:///path or postgresql://user@host:5432/db",
    "redis_url": "redis://host:6379/0; enables Redis push for flag changes",
    "broker_url": "nats://, amqp://, redis://, kafka:// or https:// (webhook)",
    "admin_keys": "control-plane keys: name:scope:key,... with scope read, admin or frontend",
    "session_secret": "signs dashboard session cookies; 32+ random characters "
    "(generated in development)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "auto (JSON in production, console in development), json or console",
    "debug": "debug mode; refused in production",
    "host": "interface `safeship serve` binds",
    "port": "port `safeship serve` listens on",
    "db_pool_size": "connections kept per process (1-200)",
    "db_max_overflow": "extra connections under load (0-200)",
    "db_pool_timeout": "seconds to wait for a pooled connection before failing with 503",
    "db_connect_timeout": "seconds to open a connection",
    "db_statement_timeout_ms": "PostgreSQL statement_timeout for safeship's connections",
    "db_expected_processes": "processes sharing the database (for `safeship check`'s pool budget)",
    "db_connection_reserve": "connections to leave free for admins and migrations",
    "health_cache_seconds": "how long a readiness result is reused",
    "session_max_age_seconds": "dashboard session lifetime",
    "max_body_bytes": "largest request body the control plane reads (413 beyond)",
    "import_max_body_bytes": "the same for POST /api/v1/flags/import",
    "trusted_proxies": "comma-separated IPs or CIDR ranges of the proxies in front of "
    "the control plane",
    "proxy_header": "the header those proxies set: x-forwarded-for, forwarded or x-real-ip",
}
FLAG_OVERRIDE_DOC = "force a flag: on, off or N% (one variable per flag)"


def _default(info: Any) -> str:
    if info.default_factory is not None:
        return "computed"
    if info.default is PydanticUndefined or info.default is None:
        return "unset"
    if isinstance(info.default, bool):
        return str(info.default).lower()
    return str(info.default) if info.default != "" else "empty"


def setting_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    rows = [
        (f"{ENV_PREFIX}{name.upper()}", _default(info), SETTING_DOCS.get(name, ""))
        for name, info in Settings.model_fields.items()
    ]
    rows.append((f"{FLAG_PREFIX}<NAME>", "unset", FLAG_OVERRIDE_DOC))
    return rows


def settings_command() -> None:
    """List every SAFESHIP_* setting with its default and what it does."""
    rows = setting_rows()
    width = max(len(name) for name, _, _ in rows)
    default_width = max(len(default) for _, default, _ in rows)
    for name, default, doc in rows:
        out.print(
            f"{name:<{width}}  {default:<{default_width}}  {doc}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
