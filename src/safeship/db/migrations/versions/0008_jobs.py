"""Durable background jobs: the hot table, history, per-queue limits, cron ticks.

Revision ID: 0008_jobs
Revises: 0007_samples
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_jobs"
down_revision = "0007_samples"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)

# The hot table churns (every job is inserted, updated and deleted): vacuum it early.
_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_vacuum_insert_scale_factor = 0.0, autovacuum_vacuum_insert_threshold = 20000, "
    "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0"
)

# One wake-up per inserting statement, folded by PostgreSQL into one per transaction.
_NOTIFY_FUNCTION = """
CREATE FUNCTION safeship_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('safeship_jobs', '');
  RETURN NULL;
END $$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER safeship_jobs_notify AFTER INSERT ON safeship_jobs
FOR EACH STATEMENT EXECUTE FUNCTION safeship_jobs_notify()
"""


def _job_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("args", _JSON, nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("unique_key", sa.String(300), nullable=True),
        sa.Column("errors", _JSON, nullable=True),
        sa.Column("progress", _JSON, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "safeship_jobs",
        sa.Column("seq", _SEQ, sa.Identity(always=False), nullable=False),
        *_job_columns(),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("run_at", _TS, nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("seq", name="pk_safeship_jobs"),
        sa.UniqueConstraint("id", name="uq_safeship_jobs_id"),
    )
    op.create_index(
        "ix_safeship_jobs_claim",
        "safeship_jobs",
        ["queue", "priority", "run_at"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_safeship_jobs_lease",
        "safeship_jobs",
        ["lease_until"],
        postgresql_where=sa.text("state = 'running'"),
        sqlite_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "ix_safeship_jobs_unique_key",
        "safeship_jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
        sqlite_where=sa.text("unique_key IS NOT NULL"),
    )
    op.create_table(
        "safeship_jobs_history",
        *_job_columns(),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("finished_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_jobs_history"),
    )
    op.create_index("ix_safeship_jobs_history_expires_at", "safeship_jobs_history", ["expires_at"])
    op.create_index(
        "ix_safeship_jobs_history_state_finished",
        "safeship_jobs_history",
        ["state", "finished_at"],
    )
    op.create_table(
        "safeship_jobs_queues",
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("queue", name="pk_safeship_jobs_queues"),
    )
    op.create_table(
        "safeship_jobs_cron",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_tick", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_safeship_jobs_cron"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE safeship_jobs SET ({_AUTOVACUUM})")
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS safeship_jobs_notify ON safeship_jobs")
        op.execute("DROP FUNCTION IF EXISTS safeship_jobs_notify()")
    op.drop_table("safeship_jobs_cron")
    op.drop_table("safeship_jobs_queues")
    op.drop_table("safeship_jobs_history")
    op.drop_table("safeship_jobs")
