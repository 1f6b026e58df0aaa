"""Jobs: the job's id is the hot table's key and the claim's tie-break; ``seq`` goes.

``safeship_jobs`` kept a sequence number beside the id only to order jobs of equal
priority and ``run_at``.  Ids are time-ordered (UUID version 7) and ascend within each
process, batches included, so the id orders them as well, and every enqueued job no longer
draws from a sequence and writes one index entry fewer.  The claim index ends in ``id``.

Jobs already pending keep their ids.  Those of equal priority and ``run_at`` written by
an older safeship in one millisecond may be claimed in another order than they were
enqueued (their ids were random within it); jobs enqueued from here on are claimed in
enqueue order.  A process of an older safeship names ``seq`` (its claim, its status and
admin reads) and fails those statements once this has run (a failed claim takes and loses
no job); safeship's schema check already refuses to start a process whose migrations
differ from the database's, so upgrade the workers with the rest.  The downgrade rewrites
every row of the hot table (about 11 s for 500,000 pending jobs on a loaded 2-core
machine).

Revision ID: 0013_jobs_id_key
Revises: 0012_jobs_claim_rate
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_jobs_id_key"
down_revision = "0012_jobs_claim_rate"
branch_labels = None
depends_on = None


def _claim_index(last: str) -> None:
    # Not CONCURRENTLY: the build stays inside the upgrade's one transaction, and the hot
    # table holds only jobs that can still run, so it is small and the build is short.
    # safeship-lint: ignore[create-index-not-concurrently] small hot table, one transaction
    op.create_index(
        "ix_safeship_jobs_claim",
        "safeship_jobs",
        ["queue", sa.text("priority DESC"), "run_at", last],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def upgrade() -> None:
    op.drop_index("ix_safeship_jobs_claim", table_name="safeship_jobs")
    with op.batch_alter_table("safeship_jobs") as batch:
        batch.drop_constraint("uq_safeship_jobs_id", type_="unique")
        batch.drop_constraint("pk_safeship_jobs", type_="primary")
        batch.drop_column("seq")
        batch.create_primary_key("pk_safeship_jobs", ["id"])
    _claim_index("id")


def downgrade() -> None:
    op.drop_index("ix_safeship_jobs_claim", table_name="safeship_jobs")
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("safeship_jobs") as batch:
        batch.drop_constraint("pk_safeship_jobs", type_="primary")
        batch.create_unique_constraint("uq_safeship_jobs_id", ["id"])
    if postgres:  # an identity column numbers the rows there already, and goes on after them
        seq = sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False)
    else:
        seq = sa.Column("seq", sa.Integer(), nullable=True)
    op.add_column("safeship_jobs", seq)
    # Number the jobs in id order, their creation order, then make seq the key again.
    op.execute(
        "UPDATE safeship_jobs SET seq = n.seq FROM (SELECT id, row_number() OVER (ORDER BY id) "
        "AS seq FROM safeship_jobs) n WHERE safeship_jobs.id = n.id"
    )
    with op.batch_alter_table("safeship_jobs") as batch:
        if not postgres:
            batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.create_primary_key("pk_safeship_jobs", ["seq"])
    _claim_index("seq")
