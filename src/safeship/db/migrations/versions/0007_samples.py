"""Server-side samples for the dashboard's charts (outbox backlog, breaker states, arms),
one row per series and time bucket, pruned to a bounded retention.

Revision ID: 0007_samples
Revises: 0006_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_samples"
down_revision = "0006_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_samples",
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "subject", "metric", "bucket", name="pk_safeship_samples"),
    )
    op.create_index("ix_safeship_samples_bucket", "safeship_samples", ["bucket"])


def downgrade() -> None:
    op.drop_index("ix_safeship_samples_bucket", table_name="safeship_samples")
    op.drop_table("safeship_samples")
