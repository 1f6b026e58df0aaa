"""The SDK instances (Unleash SDKs, OFREP providers) that registered with the control
plane or reported evaluation counts to it.

Revision ID: 0011_sdk_clients
Revises: 0010_rollout_phase
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_sdk_clients"
down_revision = "0010_rollout_phase"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safeship_sdk_clients",
        sa.Column("app_name", sa.String(200), primary_key=True),
        sa.Column("instance_id", sa.String(200), primary_key=True),
        sa.Column("sdk_version", sa.String(200), nullable=True),
        sa.Column("environment", sa.String(200), nullable=True),
        sa.Column("strategies", sa.JSON(), nullable=False),
        sa.Column("started", sa.String(100), nullable=True),
        sa.Column("interval_ms", sa.BigInteger(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluations", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index("ix_safeship_sdk_clients_last_seen", "safeship_sdk_clients", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_safeship_sdk_clients_last_seen", table_name="safeship_sdk_clients")
    op.drop_table("safeship_sdk_clients")
