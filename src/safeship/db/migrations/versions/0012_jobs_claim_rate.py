"""Jobs: a claim index in the claim's own order, and per-queue rate limits.

The claim takes pending jobs ``ORDER BY priority DESC, run_at, seq``; the index now has
that order, so a claim reads its batch off the index instead of sorting every pending job.
``safeship_jobs_queues`` gains a fleet-wide rate limit (``rate_limit`` starts per
``rate_period`` seconds) and the window the claims count in.

Revision ID: 0012_jobs_claim_rate
Revises: 0011_sdk_clients
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_jobs_claim_rate"
down_revision = "0011_sdk_clients"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_safeship_jobs_claim", table_name="safeship_jobs")
    # Not CONCURRENTLY: the build stays inside the upgrade's one transaction (which holds the
    # upgraders' advisory lock), and safeship_jobs is the hot table (finished jobs move to
    # history), so it holds few rows and the build is short.
    # safeship-lint: ignore[create-index-not-concurrently] small hot table, one transaction
    op.create_index(
        "ix_safeship_jobs_claim",
        "safeship_jobs",
        ["queue", sa.text("priority DESC"), "run_at", "seq"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    with op.batch_alter_table("safeship_jobs_queues") as batch:
        batch.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_period", sa.Float(), nullable=True))
        batch.add_column(sa.Column("window_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("window_count", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("safeship_jobs_queues") as batch:
        batch.drop_column("window_count")
        batch.drop_column("window_start")
        batch.drop_column("rate_period")
        batch.drop_column("rate_limit")
    op.drop_index("ix_safeship_jobs_claim", table_name="safeship_jobs")
    op.create_index(
        "ix_safeship_jobs_claim",
        "safeship_jobs",
        ["queue", "priority", "run_at"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
