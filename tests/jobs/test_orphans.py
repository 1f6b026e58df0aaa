"""Per-task orphan policy: rerun, fail (an attempt used) or hold as ``interrupted``; a held
job is released by retry, and the crash budget sends a crash loop to dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.jobs import JobContext, Jobs, JobState, Orphan, Retry, retry_dead, status
from safeship.jobs._store_pg import PostgresStore
from safeship.jobs._store_sqlite import SqliteStore
from safeship.jobs._worker import decide_expired


def _store(engine: sa.Engine) -> Any:
    if engine.dialect.name == "sqlite":
        return SqliteStore(engine)
    return PostgresStore(engine.url.render_as_string(hide_password=False))


async def _crash_once(store: Any, jobs: Jobs, queue: str) -> None:
    """Claim with a short lease, let it lapse (the worker "died"), rescue."""
    await store.claim([queue], 10, "dead-worker", 0.2)
    await asyncio.sleep(0.35)
    await store.rescue(lambda expired: [decide_expired(jobs, e) for e in expired], 10)


@pytest.mark.parametrize(
    ("policy", "state", "attempts", "crashes"),
    [
        (Orphan.RERUN, JobState.PENDING, 0, 1),
        (Orphan.FAIL, JobState.PENDING, 1, 1),
        (Orphan.HOLD, JobState.INTERRUPTED, 0, 1),
    ],
)
async def test_orphan_policy_decides_what_a_crash_does(
    engine: sa.Engine, policy: Orphan, state: JobState, attempts: int, crashes: int
) -> None:
    jobs = Jobs()

    @jobs.task(queue="q", orphan=policy, retry=Retry(attempts=3, base=0.0, cap=0.0))
    def work(ctx: JobContext) -> None:
        return None

    with engine.begin() as conn:
        job = work.enqueue(conn)
    store = _store(engine)
    await store.open()
    try:
        await _crash_once(store, jobs, "q")
    finally:
        await store.close()
    found = status(engine, job)
    assert (found.state, found.attempts, found.crashes) == (state, attempts, crashes)
    assert found.errors[-1]["kind"] == "crash"
    if policy is Orphan.HOLD:
        assert retry_dead(engine, ids=[job]) == 1
        assert status(engine, job).state is JobState.PENDING


async def test_a_crash_loop_spends_the_crash_budget_and_goes_dead(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(queue="loop", retry=Retry(attempts=10, crashes=2))
    def work(ctx: JobContext) -> None:
        return None

    with engine.begin() as conn:
        job = work.enqueue(conn)
    store = _store(engine)
    await store.open()
    try:
        for _ in range(3):
            await _crash_once(store, jobs, "loop")
    finally:
        await store.close()
    found = status(engine, job)
    assert found.state is JobState.DEAD
    assert [e["kind"] for e in found.errors] == ["crash"] * 3
