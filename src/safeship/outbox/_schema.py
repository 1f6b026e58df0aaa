"""The outbox's tables on safeship's shared metadata (migration ``0004_outbox`` creates them).

Column names ``id``, ``aggregatetype``, ``aggregateid``, ``type`` and ``payload`` follow the
outbox event-router convention, so a change-data-capture pipeline can read the same table.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from safeship.db._schema import metadata

__all__ = ["PARTITIONS", "archive", "dead", "inbox", "outbox", "relays"]

#: Keys hash into this many partitions; a relay leases whole partitions.  Fixed forever:
#: changing it would split a key's pending events across two partitions.
PARTITIONS = 64

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _event_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("aggregatetype", sa.String(255), nullable=False),
        sa.Column("aggregateid", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("payload", _JSON, nullable=True),
        sa.Column("headers", _JSON, nullable=True),
        sa.Column("partition", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    ]


outbox = sa.Table(
    "safeship_outbox",
    metadata,
    sa.Column("seq", _SEQ, sa.Identity(always=False), primary_key=True),
    *_event_columns(),
    sa.Index(
        "ix_safeship_outbox_retrying",
        "partition",
        "aggregateid",
        postgresql_where=sa.text("attempts > 0"),
        sqlite_where=sa.text("attempts > 0"),
    ),
)

dead = sa.Table(
    "safeship_outbox_dead",
    metadata,
    sa.Column("seq", _SEQ, nullable=False),
    *_event_columns(),
    sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_safeship_outbox_dead_dead_at", "dead_at"),
)

archive = sa.Table(
    "safeship_outbox_archive",
    metadata,
    sa.Column("seq", _SEQ, nullable=False),
    *_event_columns(),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_safeship_outbox_archive_published_at", "published_at"),
)

relays = sa.Table(
    "safeship_outbox_relays",
    metadata,
    sa.Column("relay_id", sa.String(200), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("partitions", _JSON, nullable=False),
    sa.Column("published", sa.BigInteger(), nullable=False, server_default="0"),
    # Events claimed and not yet confirmed, and events confirmed per second over the
    # relay's last ~10 s (see model.DeliveryRate), as of the last heartbeat.
    sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("delivered_per_second", sa.Float(), nullable=False, server_default="0"),
)

inbox = sa.Table(
    "safeship_inbox",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_safeship_inbox_received_at", "received_at"),
)
