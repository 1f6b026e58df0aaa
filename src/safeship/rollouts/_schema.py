"""Tables of the guard: rollouts and their plans, shared observation windows, decisions,
and the fleet's shadow comparisons (running totals and the newest mismatch samples).

Defined on safeship's shared metadata; migration ``0005_rollouts`` creates them and
``0010_rollout_phase`` adds a rollout's migration phase.
"""

from __future__ import annotations

import sqlalchemy as sa

from safeship.db._schema import metadata
from safeship.rollouts._shadow import COUNTERS as SHADOW_COUNTERS

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

rollouts = sa.Table(
    "safeship_rollouts",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
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
    # 0010_rollout_phase: the schema change the guarded code path depends on.
    sa.Column("migration_phase", sa.String(20), nullable=False, server_default="none"),
    sa.Column("migration_revision", sa.String(200), nullable=True),
)

rollout_windows = sa.Table(
    "safeship_rollout_windows",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("rollout", sa.String(200), nullable=False),
    sa.Column("process", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("control", sa.JSON(), nullable=False),
    sa.Column("candidate", sa.JSON(), nullable=False),
    sa.Index("ix_safeship_rollout_windows_rollout_id", "rollout", "id"),
)

rollout_decisions = sa.Table(
    "safeship_rollout_decisions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("rollout", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("percent", sa.Float(), nullable=False),
    sa.Column("evidence", sa.JSON(), nullable=True),
    sa.Column("reason", sa.String(2000), nullable=True),
    sa.Index("ix_safeship_rollout_decisions_rollout_id", "rollout", "id"),
)


rollout_shadow = sa.Table(
    "safeship_rollout_shadow",
    metadata,
    sa.Column("rollout", sa.String(200), primary_key=True),
    *(sa.Column(c, sa.BigInteger(), nullable=False, server_default="0") for c in SHADOW_COUNTERS),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rollout_shadow_samples = sa.Table(
    "safeship_rollout_shadow_samples",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
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
    sa.Index("ix_safeship_rollout_shadow_samples_rollout_id", "rollout", "id"),
)
