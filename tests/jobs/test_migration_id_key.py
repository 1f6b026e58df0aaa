"""Migration ``0013_jobs_id_key`` on a table with jobs in it: nothing is lost, the jobs stay
claimable in their order, the schema matches the table definitions, and it goes back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from safeship.db import upgrade
from safeship.db._migrate import _config
from safeship.db._schema import metadata
from safeship.jobs import Jobs
from safeship.jobs._schema import jobs as jobs_table
from safeship.jobs._store_pg import PostgresStore
from safeship.jobs._store_sqlite import SqliteStore

BEFORE = "0012_jobs_claim_rate"
AFTER = "0013_jobs_id_key"


@pytest.fixture
def engine(unmigrated_engine: sa.Engine) -> sa.Engine:
    """An empty database on SQLite and on PostgreSQL; each test migrates it itself."""
    return unmigrated_engine


def downgrade(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)


def _old_jobs(conn: sa.Connection, count: int) -> list[uuid.UUID]:
    """Jobs as safeship wrote them before: the same run_at, their ids in random order."""
    ids = [uuid.uuid4() for _ in range(count)]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for n, job_id in enumerate(ids):
        conn.execute(
            sa.text(
                "INSERT INTO safeship_jobs (id, task, queue, args, max_attempts, created_at, "
                "state, run_at) VALUES (:id, 't', 'default', :args, 3, :at, 'pending', :at)"
            ),
            {"id": job_id if conn.dialect.name == "postgresql" else job_id.hex,
             "args": f'{{"n": {n}}}', "at": at},
        )  # fmt: skip
    return ids


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        return [
            d
            for d in compare_metadata(context, metadata)
            if "safeship_jobs" in repr(d) and "safeship_jobs_" not in repr(d)
        ]


def test_jobs_survive_the_upgrade_and_the_downgrade(engine: sa.Engine) -> None:
    upgrade(engine, BEFORE)
    with engine.begin() as conn:
        before = _old_jobs(conn, 20)
    upgrade(engine, AFTER)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("safeship_jobs")}
        key = sa.inspect(conn).get_pk_constraint("safeship_jobs")["constrained_columns"]
        left = {row.id for row in conn.execute(sa.select(jobs_table.c.id))}
    assert "seq" not in columns
    assert key == ["id"]
    assert left == set(before)
    assert _schema_diff(engine) == []

    # new jobs go in and are claimed in id order among equals
    jobs = Jobs()

    @jobs.task(name="t")
    def t(n: int) -> None:
        pass

    with engine.begin() as conn:
        new = [jobs.enqueue(conn, "t", {"n": 100 + n}) for n in range(5)]
    assert new == sorted(new)

    downgrade(engine, BEFORE)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq, id FROM safeship_jobs ORDER BY seq")).all()
    assert len(rows) == 25
    assert [r.seq for r in rows] == list(range(1, 26))
    ids = [uuid.UUID(str(r.id)) for r in rows]
    assert ids == sorted(ids)  # numbered in id order
    # and the sequence goes on after them: a job written the old way gets a new number
    with engine.begin() as conn:
        _old_jobs(conn, 1)
        top = conn.execute(sa.text("SELECT max(seq) FROM safeship_jobs")).scalar_one()
    assert top == 26 if engine.dialect.name == "postgresql" else top >= 26
    upgrade(engine, AFTER)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar_one() == 26


def test_a_claim_takes_equal_jobs_in_enqueue_order(engine: sa.Engine) -> None:
    upgrade(engine)
    jobs = Jobs()

    @jobs.task(name="t")
    def t(n: int) -> None:
        pass

    at = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as conn:  # one transaction: PostgreSQL gives every job the same now()
        singles = [jobs.enqueue(conn, "t", {"n": n}, run_at=at) for n in range(30)]
        batch = jobs.enqueue_many(conn, "t", [{"n": 30 + n} for n in range(30)], run_at=at)
    order = singles + batch
    assert order == sorted(order)
    if engine.dialect.name == "sqlite":
        store: SqliteStore | PostgresStore = SqliteStore(engine)
    else:
        store = PostgresStore(engine.url.render_as_string(hide_password=False))

    async def claim_all() -> list[uuid.UUID]:
        taken: list[uuid.UUID] = []
        await store.open()
        try:
            while batch := await store.claim(["default"], 7, "w", 30.0):
                taken.extend(c.id for c in batch)
        finally:
            await store.close()
        return taken

    assert asyncio.run(claim_all()) == order
