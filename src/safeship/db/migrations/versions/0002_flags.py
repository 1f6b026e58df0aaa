"""Feature flags: definitions (Unleash format), segments, and the store's version counter.

Revision ID: 0002_flags
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_flags"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_flags",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("safe_value", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("lifetime_days", sa.Integer(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("last_evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_safeship_flags"),
    )
    op.create_table(
        "safeship_flag_segments",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_flag_segments"),
    )
    op.create_table(
        "safeship_flag_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("killed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_flag_state"),
    )
    op.execute("INSERT INTO safeship_flag_state (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("safeship_flag_state")
    op.drop_table("safeship_flag_segments")
    op.drop_table("safeship_flags")
