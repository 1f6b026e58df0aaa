"""Circuit breakers as reported by each process, and the manual modes set by operators.

Revision ID: 0003_breakers
Revises: 0002_flags
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_breakers"
down_revision = "0002_flags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_breakers",
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service", "instance", "name", name="pk_safeship_breakers"),
    )
    op.create_table(
        "safeship_breaker_overrides",
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("service", "name", name="pk_safeship_breaker_overrides"),
    )


def downgrade() -> None:
    op.drop_table("safeship_breaker_overrides")
    op.drop_table("safeship_breakers")
