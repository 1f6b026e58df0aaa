"""Alembic migrations shipped inside the package, run programmatically.

``upgrade(engine)`` brings a database to the newest schema; apps that migrate at start
call it (``safeship db upgrade`` does the same from a shell, through
``safeship.data``'s ``safe_upgrade``, which retries lock timeouts).  An advisory lock on
PostgreSQL keeps app processes that start together from migrating at once: the others
wait, then find nothing left to do.  That wait has no ``lock_timeout`` (a second upgrader
waits for the first to finish); the migrations that follow run under ``lock_timeout``,
set by ``env.py`` for the migration's transaction.  ``ensure_current(engine)`` refuses a
database whose schema is not the one this release needs (readiness and the CLI use it).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from safeship.errors import SafeshipError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "safeship_alembic_version"
_LOCK_ID = 0x5AFE5A1F  # pg_advisory_lock key held while migrating


#: ``lock_timeout`` of the migrations' statements on PostgreSQL unless the caller says.
LOCK_TIMEOUT_MS = 2000


def _config(
    connection: sa.Connection | None = None, lock_timeout_ms: int = LOCK_TIMEOUT_MS
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["lock_timeout_ms"] = lock_timeout_ms
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class SchemaMismatchError(SafeshipError, RuntimeError):
    """The database's schema is not the revision this release of safeship needs."""

    def __init__(self, current: str | None, needed: str) -> None:
        self.current = current
        self.needed = needed
        super().__init__(describe_mismatch(current, needed))


def describe_mismatch(current: str | None, needed: str) -> str:
    """One sentence: where the schema is, what the package needs, and what to do."""
    if current is None:
        return f"safeship's tables do not exist (package needs {needed}): run `safeship db upgrade`"
    if current not in _known_revisions():
        return (
            f"schema at {current}, which this release does not know (it ships up to "
            f"{needed}): upgrade the safeship package"
        )
    return f"schema at {current}, package needs {needed}: run `safeship db upgrade`"


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def ensure_current(engine: sa.Engine) -> str:
    """Return the database's revision; raise ``SchemaMismatchError`` unless it is the newest."""
    with engine.connect() as conn:
        return ensure_current_on(conn)


def ensure_current_on(conn: sa.Connection) -> str:
    """:func:`ensure_current` on an open connection (e.g. ``AsyncConnection.run_sync``)."""
    current, needed = revision_on(conn), head_revision()
    if current != needed:
        raise SchemaMismatchError(current, needed)
    return needed


def head_revision() -> str:
    """The newest revision shipped with this version of safeship."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("safeship ships no migrations")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None when safeship's tables do not exist yet."""
    with engine.connect() as conn:
        return revision_on(conn)


def revision_on(conn: sa.Connection) -> str | None:
    """:func:`current_revision` on an open connection."""
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(
    engine: sa.Engine, revision: str = "head", *, lock_timeout_ms: int = LOCK_TIMEOUT_MS
) -> str:
    """Migrate to ``revision`` (default: newest); return the revision reached.

    Safe to call from every app process at start: on PostgreSQL a transaction-scoped
    advisory lock makes concurrent calls run one after the other, waiting with no
    ``lock_timeout``; the migrations then run with ``lock_timeout_ms`` (55P03 when a lock
    is not had in time: the transaction rolls back whole, and running again is safe).
    """
    if not 1 <= lock_timeout_ms <= 600_000:
        raise ValueError(f"lock_timeout_ms must be 1..600000, got {lock_timeout_ms!r}")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Waiting for another upgrader is not a lock to give up on: no timeout here,
            # whatever the session or the role has; env.py sets the migrations' own.
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        elif conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            # The sqlite3 driver opens a transaction only before a DML statement, so DDL
            # would commit statement by statement and a failure midway would leave half a
            # migration behind. One explicit transaction holds the whole upgrade, and
            # IMMEDIATE takes the write lock first, so concurrent upgraders queue.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        command.upgrade(_config(conn, int(lock_timeout_ms)), revision)
    reached = current_revision(engine)
    return reached or ""
