"""Guarded rollouts: plans and state, shared observation windows, decisions, shadow results.

Revision ID: 0005_rollouts
Revises: 0004_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rollouts"
down_revision = "0004_outbox"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "safeship_rollouts",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_first_window", _ID, nullable=False),
        sa.Column("threshold_bucket", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_safeship_rollouts"),
    )
    op.create_table(
        "safeship_rollout_windows",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("rollout", sa.String(200), nullable=False),
        sa.Column("process", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("control", sa.JSON(), nullable=False),
        sa.Column("candidate", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_rollout_windows"),
    )
    op.create_index(
        "ix_safeship_rollout_windows_rollout_id", "safeship_rollout_windows", ["rollout", "id"]
    )
    op.create_table(
        "safeship_rollout_decisions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("rollout", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_rollout_decisions"),
    )
    op.create_index(
        "ix_safeship_rollout_decisions_rollout_id", "safeship_rollout_decisions", ["rollout", "id"]
    )
    _shadow_tables()


_SHADOW_COUNTERS = (
    "runs", "matches", "mismatches", "ignored", "candidate_errors", "timeouts", "hook_errors",
    "dropped",
)  # fmt: skip


def _shadow_tables() -> None:
    op.create_table(
        "safeship_rollout_shadow",
        sa.Column("rollout", sa.String(200), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            for name in _SHADOW_COUNTERS
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rollout", name="pk_safeship_rollout_shadow"),
    )
    op.create_table(
        "safeship_rollout_shadow_samples",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("rollout", sa.String(200), nullable=False),
        sa.Column("process", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("diff", sa.String(1000), nullable=True),
        sa.Column("control", sa.String(1000), nullable=True),
        sa.Column("candidate", sa.String(1000), nullable=True),
        sa.Column("candidate_error", sa.String(1000), nullable=True),
        sa.Column("candidate_ms", sa.Float(), nullable=True),
        sa.Column("context", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_rollout_shadow_samples"),
    )
    op.create_index(
        "ix_safeship_rollout_shadow_samples_rollout_id",
        "safeship_rollout_shadow_samples",
        ["rollout", "id"],
    )


def downgrade() -> None:
    op.drop_table("safeship_rollout_shadow_samples")
    op.drop_table("safeship_rollout_shadow")
    op.drop_table("safeship_rollout_decisions")
    op.drop_table("safeship_rollout_windows")
    op.drop_table("safeship_rollouts")
