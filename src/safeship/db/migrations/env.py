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
    context.run_migrations()
