"""The idempotency table on safeship's shared metadata (migration ``0009_idempotency``).

Times are milliseconds since the epoch read from the database's own clock when written,
so expiry and leases never depend on an app server's clock.
"""

from __future__ import annotations

import sqlalchemy as sa

from safeship.db._schema import metadata

__all__ = ["idempotency"]

idempotency = sa.Table(
    "safeship_idempotency",
    metadata,
    # SHA-256 (hex) of the scope and the key: fixed length, one caller never meets another.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("token", sa.String(32), nullable=True),
    sa.Column("lease_until", sa.BigInteger(), nullable=True),
    sa.Column("expires_at", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("headers", sa.JSON(), nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=True),
    sa.Column("body_kept", sa.Boolean(), nullable=True),
    sa.Index("ix_safeship_idempotency_expires_at", "expires_at"),
)
