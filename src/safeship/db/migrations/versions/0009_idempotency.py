"""Idempotency keys: one row per (scope, key), its state, lease and stored response.

Revision ID: 0009_idempotency
Revises: 0008_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_idempotency"
down_revision = "0008_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_idempotency",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("token", sa.String(32), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("body_kept", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_safeship_idempotency"),
    )
    op.create_index("ix_safeship_idempotency_expires_at", "safeship_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_safeship_idempotency_expires_at", table_name="safeship_idempotency")
    op.drop_table("safeship_idempotency")
