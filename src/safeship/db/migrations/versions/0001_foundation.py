"""Foundation: audit trail and admin API keys.

Revision ID: 0001_foundation
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "safeship_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_audit"),
    )
    op.create_index("ix_safeship_audit_target_at", "safeship_audit", ["target", "at"])
    op.create_index("ix_safeship_audit_at", "safeship_audit", ["at"])
    op.create_table(
        "safeship_api_keys",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_safeship_api_keys"),
    )


def downgrade() -> None:
    op.drop_table("safeship_api_keys")
    op.drop_index("ix_safeship_audit_at", table_name="safeship_audit")
    op.drop_index("ix_safeship_audit_target_at", table_name="safeship_audit")
    op.drop_table("safeship_audit")
