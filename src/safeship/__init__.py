"""safeship: change a live Python service without risk.

The names here are the everyday entry points; each capability's package
(``safeship.flags``, ``safeship.resilience``, ``safeship.web``, ``safeship.observe``,
``safeship.db``) holds the rest. Heavier names are imported on first use, so
``import safeship`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from safeship._extras import MissingExtraError
from safeship._version import __version__
from safeship.errors import SafeshipError

if TYPE_CHECKING:
    from safeship.flags import Context, FlagSet
    from safeship.flags.live import FlagClient
    from safeship.flags.store import FlagStore
    from safeship.resilience import Breaker, Retry, Timeout, pipeline
    from safeship.settings import Settings, SettingsError, load_settings
    from safeship.web import protect

__all__ = [
    "Breaker",
    "Context",
    "FlagClient",
    "FlagSet",
    "FlagStore",
    "Retry",
    "SafeshipError",
    "Settings",
    "SettingsError",
    "Timeout",
    "__version__",
    "load_settings",
    "pipeline",
    "protect",
]

_LAZY = {
    "Breaker": "safeship.resilience",
    "Context": "safeship.flags",
    "FlagClient": "safeship.flags.live",
    "FlagSet": "safeship.flags",
    "FlagStore": "safeship.flags.store",
    "Retry": "safeship.resilience",
    "Settings": "safeship.settings",
    "SettingsError": "safeship.settings",
    "Timeout": "safeship.resilience",
    "load_settings": "safeship.settings",
    "pipeline": "safeship.resilience",
    "protect": "safeship.web",
}


#: Names whose module needs an extra beyond the core (the module checks the others itself).
_EXTRA = {"FlagClient": "db", "FlagStore": "db"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safeship' has no attribute {name!r}")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if name not in _EXTRA or isinstance(exc, MissingExtraError):
            raise
        missing = exc.name or "?"
        raise MissingExtraError(
            feature=f"safeship.{name}", module=missing, extra=_EXTRA[name]
        ) from exc
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
