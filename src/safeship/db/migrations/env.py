"""Alembic environment: runs on the connection that ``safeship.db._migrate`` passes in."""

from __future__ import annotations

from alembic import context

from safeship.db._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run safeship migrations with `safeship db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "safeship_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Every revision's DDL waits at most this long for its table lock (55P03 after):
        # a migration never queues the application's queries behind it for longer.
        # SET LOCAL: it ends with the migration's transaction, not on the pooled session.
        lock_ms = int(context.config.attributes.get("lock_timeout_ms", 2000))
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {lock_ms}")
    context.run_migrations()
