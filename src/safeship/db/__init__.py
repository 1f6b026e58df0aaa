"""safeship's own tables (SQLAlchemy Core), engine factory, migrations and audit trail.

Needs the ``db`` extra (SQLAlchemy, Alembic). Alembic is imported only when migrations run,
so code that only reads and writes safeship's tables does not load it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from safeship._extras import require

require("db", "sqlalchemy", feature="safeship.db")

from safeship.db._audit import AuditRecord, list_audit, record_audit  # noqa: E402
from safeship.db._engine import DatabaseUnavailableError, create_engine, normalise_url  # noqa: E402
from safeship.db._schema import metadata  # noqa: E402

if TYPE_CHECKING:
    from safeship.db._migrate import (
        SchemaMismatchError,
        current_revision,
        ensure_current,
        head_revision,
        upgrade,
    )

__all__ = [
    "AuditRecord",
    "DatabaseUnavailableError",
    "SchemaMismatchError",
    "create_engine",
    "current_revision",
    "ensure_current",
    "head_revision",
    "list_audit",
    "metadata",
    "normalise_url",
    "record_audit",
    "upgrade",
]

_MIGRATIONS = frozenset(
    {"SchemaMismatchError", "current_revision", "ensure_current", "head_revision", "upgrade"}
)


def __getattr__(name: str) -> Any:
    if name not in _MIGRATIONS:
        raise AttributeError(f"module 'safeship.db' has no attribute {name!r}")
    require("db", "alembic", feature="safeship.db migrations")
    value = getattr(importlib.import_module("safeship.db._migrate"), name)
    globals()[name] = value
    return value
