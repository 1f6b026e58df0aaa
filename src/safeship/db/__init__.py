"""safeship's own tables (SQLAlchemy Core), engine factory, migrations and audit trail."""

from safeship.db.audit import AuditRecord, list_audit, record_audit
from safeship.db.engine import DatabaseUnavailableError, create_engine, normalise_url
from safeship.db.migrate import current_revision, head_revision, upgrade
from safeship.db.schema import metadata

__all__ = [
    "AuditRecord",
    "DatabaseUnavailableError",
    "create_engine",
    "current_revision",
    "head_revision",
    "list_audit",
    "metadata",
    "normalise_url",
    "record_audit",
    "upgrade",
]
