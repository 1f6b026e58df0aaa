"""Alembic migrations shipped inside the package, run programmatically.

``upgrade(engine)`` brings a database to the newest schema; the demo, the server and the
tests call it at start-up.  An advisory lock on PostgreSQL keeps two processes that start
together from migrating at once.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "safeship_alembic_version"
_LOCK_ID = 0x5AFE5A1F  # pg_advisory_lock key held while migrating


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of safeship."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("safeship ships no migrations")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None when safeship's tables do not exist yet."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Migrate to ``revision`` (default: newest); return the revision reached."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        command.upgrade(_config(conn), revision)
    reached = current_revision(engine)
    return reached or ""
