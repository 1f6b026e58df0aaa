"""Transactional outbox: pending events, dead letters, archive, relay membership, inbox.

Revision ID: 0004_outbox
Revises: 0003_breakers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_outbox"
down_revision = "0003_breakers"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# A queue table churns: vacuum it after a small fraction of dead rows, without throttling.
_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_vacuum_insert_scale_factor = 0.0, autovacuum_vacuum_insert_threshold = 20000, "
    "autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0"
)

# One wake-up per inserting statement (not per row) for relays that LISTEN; PostgreSQL
# folds identical notifications of one transaction into one.
_NOTIFY_FUNCTION = """
CREATE FUNCTION safeship_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('safeship_outbox', '');
  RETURN NULL;
END $$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER safeship_outbox_notify AFTER INSERT ON safeship_outbox
FOR EACH STATEMENT EXECUTE FUNCTION safeship_outbox_notify()
"""


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


def upgrade() -> None:
    op.create_table(
        "safeship_outbox",
        sa.Column("seq", _SEQ, sa.Identity(always=False), nullable=False),
        *_event_columns(),
        sa.PrimaryKeyConstraint("seq", name="pk_safeship_outbox"),
    )
    op.create_index(
        "ix_safeship_outbox_retrying",
        "safeship_outbox",
        ["partition", "aggregateid"],
        postgresql_where=sa.text("attempts > 0"),
        sqlite_where=sa.text("attempts > 0"),
    )
    op.create_table(
        "safeship_outbox_dead",
        sa.Column("seq", _SEQ, nullable=False),
        *_event_columns(),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_outbox_dead"),
    )
    op.create_index("ix_safeship_outbox_dead_dead_at", "safeship_outbox_dead", ["dead_at"])
    op.create_table(
        "safeship_outbox_archive",
        sa.Column("seq", _SEQ, nullable=False),
        *_event_columns(),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_safeship_outbox_archive"),
    )
    op.create_index(
        "ix_safeship_outbox_archive_published_at", "safeship_outbox_archive", ["published_at"]
    )
    op.create_table(
        "safeship_outbox_relays",
        sa.Column("relay_id", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partitions", _JSON, nullable=False),
        sa.Column("published", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_per_second", sa.Float(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("relay_id", name="pk_safeship_outbox_relays"),
    )
    op.create_table(
        "safeship_inbox",
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="pk_safeship_inbox"),
    )
    op.create_index("ix_safeship_inbox_received_at", "safeship_inbox", ["received_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE safeship_outbox SET ({_AUTOVACUUM})")
        op.execute(f"ALTER TABLE safeship_inbox SET ({_AUTOVACUUM})")
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS safeship_outbox_notify ON safeship_outbox")
        op.execute("DROP FUNCTION IF EXISTS safeship_outbox_notify()")
    op.drop_table("safeship_inbox")
    op.drop_table("safeship_outbox_relays")
    op.drop_table("safeship_outbox_archive")
    op.drop_table("safeship_outbox_dead")
    op.drop_table("safeship_outbox")
