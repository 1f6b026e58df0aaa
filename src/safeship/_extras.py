"""Optional dependencies: import them, or say which extra to install.

The core (resilience, flag evaluation, observe) needs only structlog, prometheus-client and
mmh3. The database layer, the control plane and the CLI are extras; a slice that needs one
calls :func:`require` first, so a missing package fails with the install command instead of
a bare ``ModuleNotFoundError`` from deep inside an import.
"""

from __future__ import annotations

import importlib

from safeship.errors import SafeshipError

#: What each extra is for, as said in the error (the packages are in pyproject.toml).
EXTRAS = {
    "db": "the database layer (SQLAlchemy, Alembic)",
    "server": "the control plane and settings (FastAPI, uvicorn, Jinja2, pydantic)",
    "cli": "the safeship command (typer, rich)",
}


class MissingExtraError(SafeshipError, ImportError):
    """A feature was used whose optional dependencies are not installed."""

    def __init__(self, *, feature: str, module: str, extra: str) -> None:
        self.feature = feature
        self.module = module
        self.extra = extra
        what = EXTRAS.get(extra, f"the {extra!r} extra")
        super().__init__(
            f"{feature} needs the {module!r} package, part of {what}: "
            f"pip install 'safeship[{extra}]'",
            name=module,
        )


def require(extra: str, *modules: str, feature: str) -> None:
    """Import each of ``modules``; raise `MissingExtraError` naming ``extra`` if one is absent."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtraError(feature=feature, module=module, extra=extra) from exc
