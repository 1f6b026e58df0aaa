"""Table definitions for safeship's own data.  Migrations in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

audit = sa.Table(
    "safeship_audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("before", sa.JSON(), nullable=True),
    sa.Column("after", sa.JSON(), nullable=True),
    sa.Column("reason", sa.String(2000), nullable=True),
    sa.Index("ix_safeship_audit_target_at", "target", "at"),
    sa.Index("ix_safeship_audit_at", "at"),
)

api_keys = sa.Table(
    "safeship_api_keys",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("scope", sa.String(20), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

sessions = sa.Table(
    "safeship_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # SHA-256 of the cookie's token
    sa.Column("key_name", sa.String(100), nullable=False),
    sa.Column("key_fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.BigInteger(), nullable=False),  # seconds since the epoch
    sa.Index("ix_safeship_sessions_key_name", "key_name"),
    sa.Index("ix_safeship_sessions_expires_at", "expires_at"),
)

flags = sa.Table(
    "safeship_flags",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
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
)

flag_segments = sa.Table(
    "safeship_flag_segments",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("definition", sa.JSON(), nullable=False),
)

flag_state = sa.Table(
    "safeship_flag_state",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("killed_at", sa.DateTime(timezone=True), nullable=True),
)

breakers = sa.Table(
    "safeship_breakers",
    metadata,
    sa.Column("service", sa.String(100), primary_key=True),
    sa.Column("instance", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("snapshot", sa.JSON(), nullable=False),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
)

breaker_overrides = sa.Table(
    "safeship_breaker_overrides",
    metadata,
    sa.Column("service", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)
