"""A rollout's migration phase: whether the code path it guards depends on an expand-only
or a contract migration (after a contract, rolling the code back is refused).

Revision ID: 0010_rollout_phase
Revises: 0009_idempotency
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_rollout_phase"
down_revision = "0009_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand-only itself: a nullable column and one with a default, so code of the
    # previous version keeps working on the upgraded schema.
    with op.batch_alter_table("safeship_rollouts") as batch:
        batch.add_column(
            sa.Column("migration_phase", sa.String(20), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("migration_revision", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safeship_rollouts") as batch:
        batch.drop_column("migration_revision")
        batch.drop_column("migration_phase")
