"""Dashboard sessions kept server-side, so signing out and revoking a key end them at once.

Revision ID: 0006_sessions
Revises: 0005_rollouts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sessions"
down_revision = "0005_rollouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(100), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_sessions"),
    )
    op.create_index("ix_safeship_sessions_key_name", "safeship_sessions", ["key_name"])
    op.create_index("ix_safeship_sessions_expires_at", "safeship_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_safeship_sessions_expires_at", table_name="safeship_sessions")
    op.drop_index("ix_safeship_sessions_key_name", table_name="safeship_sessions")
    op.drop_table("safeship_sessions")
