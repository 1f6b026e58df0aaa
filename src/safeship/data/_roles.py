"""Statement and lock timeouts per database role (API requests vs batch jobs).

An API request should fail fast rather than hold a connection behind a lock; a batch job
may run long but must not queue behind DDL forever.  A :class:`DatabaseRole` carries the
three PostgreSQL timeouts, is read from settings (environment) once, and is applied to
every new connection of an engine, or to one transaction with ``SET LOCAL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from safeship.data._errors import BatchConfigError

__all__ = ["API_ROLE", "BATCH_ROLE", "DatabaseRole"]

_MAX_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class DatabaseRole:
    """The timeouts of one kind of work, in milliseconds (0 turns a timeout off)."""

    name: str
    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_transaction_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise BatchConfigError(f"role name must be an identifier, got {self.name!r}")
        for field in ("statement_timeout_ms", "lock_timeout_ms", "idle_in_transaction_timeout_ms"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 0 <= value <= _MAX_MS:
                raise BatchConfigError(
                    f"{self.name}.{field} must be 0..{_MAX_MS} ms, got {value!r}"
                )

    @classmethod
    def from_settings(
        cls, default: DatabaseRole, env: Mapping[str, str] | None = None
    ) -> DatabaseRole:
        """``default`` with ``SAFESHIP_DB_ROLE_<NAME>_<FIELD>`` overrides from the environment,
        e.g. ``SAFESHIP_DB_ROLE_API_STATEMENT_TIMEOUT_MS=3000``."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in ("statement_timeout_ms", "lock_timeout_ms", "idle_in_transaction_timeout_ms"):
            key = f"SAFESHIP_DB_ROLE_{default.name.upper()}_{field.upper()}"
            raw = source.get(key)
            if raw is None:
                continue
            try:
                values[field] = int(raw)
            except ValueError:
                raise BatchConfigError(f"{key} must be a whole number of ms, got {raw!r}") from None
        return cls(
            default.name,
            values.get("statement_timeout_ms", default.statement_timeout_ms),
            values.get("lock_timeout_ms", default.lock_timeout_ms),
            values.get("idle_in_transaction_timeout_ms", default.idle_in_transaction_timeout_ms),
        )

    def settings(self) -> dict[str, str]:
        """The server settings, as asyncpg's ``server_settings`` takes them."""
        return {
            "statement_timeout": str(self.statement_timeout_ms),
            "lock_timeout": str(self.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(self.idle_in_transaction_timeout_ms),
            "application_name": f"safeship-{self.name}",
        }

    def statements(self, *, local: bool = False) -> list[str]:
        verb = "SET LOCAL" if local else "SET"
        return [f"{verb} {key} = '{value}'" for key, value in self.settings().items()]

    def apply(self, engine: sa.Engine) -> None:
        """Set this role's timeouts on every connection ``engine`` opens (PostgreSQL)."""
        if engine.dialect.name != "postgresql":
            return
        statements = self.statements()

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
            finally:
                cursor.close()
            if not getattr(dbapi_connection, "autocommit", True):
                dbapi_connection.commit()

        sa.event.listen(engine, "connect", on_connect)

    def set_local(self, conn: sa.Connection) -> None:
        """This role's timeouts for the rest of ``conn``'s current transaction only."""
        if conn.dialect.name == "postgresql":
            for statement in self.statements(local=True):
                conn.exec_driver_sql(statement)


#: Requests: fail within seconds rather than hold a connection behind a lock.
API_ROLE = DatabaseRole("api", statement_timeout_ms=5_000, lock_timeout_ms=2_000)
#: Batch jobs: long statements allowed, but never queue behind DDL for long.
BATCH_ROLE = DatabaseRole(
    "batch", statement_timeout_ms=600_000, lock_timeout_ms=10_000, idle_in_transaction_timeout_ms=0
)
