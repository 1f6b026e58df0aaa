"""The job tables on safeship's shared metadata
(migrations ``0008_jobs``, ``0012_jobs_claim_rate`` and ``0013_jobs_id_key`` shape them).

``safeship_jobs`` is the hot table: only jobs that can still run (pending, running,
interrupted) live there, so it stays small and its indexes stay hot.  A finished job
(succeeded, cancelled, dead) moves to ``safeship_jobs_history`` in the same statement that
finishes it; history rows expire after the task's result TTL (dead letters stay until
purged).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from safeship.db._schema import metadata

__all__ = ["cron", "history", "jobs", "queues"]

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def _job_columns(*, key: bool) -> list[sa.Column[object]]:
    return [
        # Time-ordered (UUID version 7, ascending within a process): the claim's tie-break.
        sa.Column("id", sa.Uuid(), primary_key=key, nullable=False),
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


jobs = sa.Table(
    "safeship_jobs",
    metadata,
    *_job_columns(key=True),
    # pending | running | interrupted
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("run_at", _TS, nullable=False),
    # Fencing token: bumped by every claim, hand-back and rescue; a worker may only
    # finish the job while the token it claimed is still the row's.
    sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("lease_until", _TS, nullable=True),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(
        "ix_safeship_jobs_claim",
        "queue",
        sa.text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    ),
    sa.Index(
        "ix_safeship_jobs_lease",
        "lease_until",
        postgresql_where=sa.text("state = 'running'"),
        sqlite_where=sa.text("state = 'running'"),
    ),
    sa.Index(
        "ix_safeship_jobs_unique_key",
        "unique_key",
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
        sqlite_where=sa.text("unique_key IS NOT NULL"),
    ),
)

history = sa.Table(
    "safeship_jobs_history",
    metadata,
    *_job_columns(key=False),
    # succeeded | cancelled | dead
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("result", _JSON, nullable=True),
    sa.Column("finished_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_safeship_jobs_history_expires_at", "expires_at"),
    sa.Index("ix_safeship_jobs_history_state_finished", "state", "finished_at"),
)

queues = sa.Table(
    "safeship_jobs_queues",
    metadata,
    sa.Column("queue", sa.String(100), primary_key=True),
    # Jobs of this queue running at once across the whole fleet (NULL: no limit).
    sa.Column("concurrency", sa.Integer(), nullable=True),
    # Fleet-wide rate limit: at most rate_limit starts per rate_period seconds (NULL: none),
    # counted in fixed windows; window_start/window_count are the current window.
    sa.Column("rate_limit", sa.Integer(), nullable=True),
    sa.Column("rate_period", sa.Float(), nullable=True),
    sa.Column("window_start", _TS, nullable=True),
    sa.Column("window_count", sa.Integer(), nullable=False, server_default="0"),
)

cron = sa.Table(
    "safeship_jobs_cron",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    # The last tick some scheduler enqueued; a tick is taken by moving this forward.
    sa.Column("last_tick", _TS, nullable=False),
)
