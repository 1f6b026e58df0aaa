"""Enqueue in the caller's transaction, run, retry, dead letters, status: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa

from safeship.jobs import (
    GiveUp,
    JobContext,
    Jobs,
    JobState,
    Retry,
    Snooze,
    dead_letters,
    purge_dead,
    retry_dead,
    stats,
    status,
)

from .conftest import await_until


def _fast(**kw: Any) -> dict[str, Any]:
    return {"heartbeat": 0.2, "lease": 1.0, "poll": 0.05, "rescue_every": 0.2, **kw}


async def _run_until(worker: Any, condition: Any, limit: float = 20.0) -> None:
    runner = asyncio.create_task(worker.run())
    try:
        await await_until(condition, timeout=limit, message="worker did not get there")
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)


async def test_a_job_exists_only_if_its_transaction_commits_and_runs_once(
    engine: sa.Engine,
) -> None:
    jobs = Jobs()
    seen: list[int] = []

    @jobs.task(queue="emails")
    async def send(ctx: JobContext, order_id: int) -> dict[str, int]:
        seen.append(order_id)
        return {"sent": order_id}

    with engine.begin() as conn:
        kept = send.enqueue(conn, order_id=1)
    conn = engine.connect()
    with conn.begin():
        jobs.enqueue(conn, "send", {"order_id": 2})
        conn.rollback()  # the business write failed: its job goes with it
    conn.close()
    worker = jobs.worker(engine, **_fast())
    await _run_until(worker, lambda: status(engine, kept).state is JobState.SUCCEEDED)
    assert seen == [1]
    done = status(engine, kept)
    assert (done.result, done.attempts, done.errors) == ({"sent": 1}, 1, [])


async def test_failures_retry_with_history_then_dead_letter_and_retry_back(
    engine: sa.Engine,
) -> None:
    jobs = Jobs()
    calls: list[int] = []

    @jobs.task(retry=Retry(attempts=3, base=0.01, cap=0.05))
    def flaky(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise ValueError(f"boom {ctx.attempt}")

    with engine.begin() as conn:
        job = flaky.enqueue(conn)
    await _run_until(
        jobs.worker(engine, **_fast()), lambda: status(engine, job).state is JobState.DEAD
    )
    dead = status(engine, job)
    assert calls == [1, 2, 3]
    assert [e["message"] for e in dead.errors] == [f"ValueError: boom {i}" for i in (1, 2, 3)]
    assert [d.id for d in dead_letters(engine)] == [job]
    assert stats(engine)[0].dead == 1
    assert retry_dead(engine, ids=[job]) == 1
    assert status(engine, job).state is JobState.PENDING
    assert purge_dead(engine) == 0


async def test_give_up_and_per_exception_policy_skip_retries_snooze_keeps_attempts(
    engine: sa.Engine,
) -> None:
    jobs = Jobs()
    snoozed: list[int] = []

    @jobs.task(retry=Retry(attempts=5, on={KeyError: "give_up"}))
    def lookup(ctx: JobContext) -> None:
        raise KeyError("gone")

    @jobs.task(retry=Retry(attempts=5))
    def refuse(ctx: JobContext) -> None:
        raise GiveUp("not worth it")

    @jobs.task(retry=Retry(attempts=1))
    def later(ctx: JobContext) -> str:
        snoozed.append(ctx.attempt)
        if len(snoozed) < 3:
            raise Snooze(0.01)
        return "ok"

    with engine.begin() as conn:
        ids = [jobs.enqueue(conn, name) for name in ("lookup", "refuse", "later")]
    finished = lambda: all(status(engine, i).state.finished for i in ids)  # noqa: E731
    await _run_until(jobs.worker(engine, **_fast()), finished)
    states = [status(engine, i) for i in ids]
    assert [s.state for s in states] == [JobState.DEAD, JobState.DEAD, JobState.SUCCEEDED]
    assert [s.attempts for s in states] == [1, 1, 1]
    assert snoozed == [1, 1, 1]


async def test_delayed_job_waits_and_priority_orders_claims(engine: sa.Engine) -> None:
    jobs = Jobs()
    order: list[str] = []

    @jobs.task
    async def mark(ctx: JobContext, name: str) -> None:
        order.append(name)

    with engine.begin() as conn:
        jobs.enqueue(conn, mark, {"name": "low"}, priority=-5)
        jobs.enqueue(conn, mark, {"name": "high"}, priority=5)
        jobs.enqueue(conn, mark, {"name": "mid"})
        late = jobs.enqueue(conn, mark, {"name": "late"}, delay=0.8)
    await _run_until(jobs.worker(engine, concurrency=1, **_fast()), lambda: len(order) == 4)
    assert order == ["high", "mid", "low", "late"]
    assert status(engine, late).state is JobState.SUCCEEDED


async def test_bulk_enqueue_and_unique_keys_return_existing_ids(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(unique=lambda order_id: f"confirm:{order_id}")
    async def confirm(ctx: JobContext, order_id: int) -> None:
        return None

    with engine.begin() as conn:
        first = confirm.enqueue(conn, order_id=1)
        many = jobs.enqueue_many(conn, confirm, [{"order_id": i % 3} for i in range(9)])
    assert many[1] == first and many[4] == first
    assert len(set(many)) == 3
    with engine.begin() as conn:
        assert confirm.enqueue(conn, order_id=2) == many[2]
        count = conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar()
    assert count == 3
    assert isinstance(first, uuid.UUID)


async def test_a_job_over_its_timeout_fails_with_a_timeout_entry(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(timeout=0.1, retry=Retry(attempts=2, base=0.0, cap=0.0))
    async def stuck(ctx: JobContext) -> None:
        await asyncio.sleep(30)

    @jobs.task(timeout=0.1, retry=Retry(attempts=1))
    def stuck_sync(ctx: JobContext) -> None:
        ctx.cancelled.wait(30)  # the attempt is abandoned: its flag tells the thread to stop

    with engine.begin() as conn:
        ids = [jobs.enqueue(conn, name) for name in ("stuck", "stuck_sync")]
    finished = lambda: all(status(engine, i).state.finished for i in ids)  # noqa: E731
    await _run_until(jobs.worker(engine, **_fast()), finished)
    a, b = (status(engine, i) for i in ids)
    assert (a.state, a.attempts, b.state) == (JobState.DEAD, 2, JobState.DEAD)
    assert [e["kind"] for e in a.errors + b.errors] == ["timeout"] * 3
