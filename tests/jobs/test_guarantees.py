"""Fencing under lease takeover, complete-in-transaction, cancellation, unique keys under
concurrency, cron once per tick, a blocked event loop that still heartbeats."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine
from safeship.jobs import (
    JobContext,
    Jobs,
    JobState,
    LeaseLostError,
    Worker,
    cancel,
    status,
)
from safeship.jobs._cron import fire_due
from safeship.jobs._store import Outcome
from safeship.jobs._store_pg import PostgresStore
from safeship.jobs._store_sqlite import SqliteStore
from safeship.jobs._worker import decide_expired

from .conftest import await_until, wait_until

FAST: dict[str, Any] = {"heartbeat": 0.2, "lease": 1.0, "poll": 0.05, "rescue_every": 0.2}


def _store(engine: sa.Engine) -> Any:
    if engine.dialect.name == "sqlite":
        return SqliteStore(engine)
    return PostgresStore(engine.url.render_as_string(hide_password=False))


async def test_a_worker_whose_lease_was_taken_over_cannot_finish_or_complete(
    engine: sa.Engine,
) -> None:
    jobs = Jobs()

    @jobs.task
    def work(ctx: JobContext) -> None:
        return None

    with engine.begin() as conn:
        job = work.enqueue(conn)
    old, new = _store(engine), _store(engine)
    await old.open()
    await new.open()
    try:
        (first,) = await old.claim(["default"], 10, "old", 0.3)
        await asyncio.sleep(0.5)  # the old worker stalls past its lease
        rescued = await new.rescue(lambda expired: [decide_expired(jobs, e) for e in expired], 10)
        assert [o.state for o in rescued] == ["pending"]
        (second,) = await new.claim(["default"], 10, "new", 30)
        assert second.id == job and second.token > first.token
        # The zombie attempt: its outcome, its heartbeat and its complete are all refused.
        assert await old.finish([Outcome(job, first.token, "succeeded", result="1")]) == set()
        ours, _ = old.beat([(job, first.token)], 30, {})
        assert ours == set()
        zombie = JobContext(id=job, task=work, attempt=1, token=first.token, args={})
        with pytest.raises(LeaseLostError), engine.begin() as conn:
            zombie.complete(conn, "zombie")
        assert status(engine, job).state is JobState.RUNNING
        assert await new.finish([Outcome(job, second.token, "succeeded", result='"ok"')]) == {job}
        done = status(engine, job)
        assert (done.state, done.result, done.crashes) == (JobState.SUCCEEDED, "ok", 1)
    finally:
        old.close_beat()
        await old.close()
        await new.close()


async def test_complete_in_transaction_commits_done_with_the_effect(engine: sa.Engine) -> None:
    jobs = Jobs()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE mails (order_id INTEGER)"))

    @jobs.task
    def send(ctx: JobContext, order_id: int) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO mails VALUES (:o)"), {"o": order_id})
            ctx.complete(conn, {"mailed": order_id})

    with engine.begin() as conn:
        job = send.enqueue(conn, order_id=7)
    worker = Worker(jobs, engine, **FAST)
    runner = asyncio.create_task(worker.run())
    await await_until(lambda: status(engine, job).state.finished, timeout=20, message="done")
    worker.stop()
    await runner
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT order_id FROM mails")).scalars().all() == [7]
    assert status(engine, job).result == {"mailed": 7}


async def test_cancel_pending_never_runs_and_running_stops_cooperatively(engine: sa.Engine) -> None:
    jobs = Jobs()
    started = threading.Event()
    ran: list[str] = []

    @jobs.task
    def long(ctx: JobContext, name: str) -> None:
        ran.append(name)
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.02)

    with engine.begin() as conn:
        later = jobs.enqueue(conn, long, {"name": "later"}, delay=60)
        now = jobs.enqueue(conn, long, {"name": "now"})
    assert cancel(engine, later) is JobState.CANCELLED
    worker = Worker(jobs, engine, **FAST)
    runner = asyncio.create_task(worker.run())
    await await_until(started.is_set, timeout=20, message="job started")
    assert cancel(engine, now) is JobState.RUNNING
    await await_until(lambda: status(engine, now).state.finished, timeout=20, message="cancel seen")
    worker.stop()
    await runner
    assert (status(engine, now).state, status(engine, later).state) == (JobState.CANCELLED,) * 2
    assert ran == ["now"]


@pytest.mark.postgres
def test_twenty_concurrent_unique_enqueues_make_one_job_with_one_id(pg_engine: sa.Engine) -> None:
    jobs = Jobs()
    # Twenty connections at once: more than the default pool holds.
    many = sa.create_engine(pg_engine.url, poolclass=sa.pool.NullPool)

    @jobs.task(unique=lambda order_id: f"confirm:{order_id}")
    def confirm(ctx: JobContext, order_id: int) -> None:
        return None

    barrier = threading.Barrier(20)
    ids: list[uuid.UUID] = []
    lock = threading.Lock()

    def enqueue() -> None:
        with many.connect() as conn:
            barrier.wait(30)
            with conn.begin():
                job = confirm.enqueue(conn, order_id=42)
                time.sleep(0.01)  # hold the transaction so the others collide with it
            with lock:
                ids.append(job)

    threads = [threading.Thread(target=enqueue) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    many.dispose()
    with pg_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id FROM safeship_jobs")).scalars().all()
    assert len(ids) == 20 and len(set(ids)) == 1
    assert [uuid.UUID(str(r)) for r in rows] == [ids[0]]


def test_cron_fires_once_per_tick_with_two_schedulers(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task
    def report(ctx: JobContext) -> None:
        return None

    jobs.cron("hourly-report", task=report, every=3600)
    url = engine.url.render_as_string(hide_password=False)
    other = create_engine(url)  # the second scheduler has its own engine (own connections)
    fired: list[str] = []
    try:
        for tick in range(5):
            now = 1_800_000_000 + tick * 3600 + 0.5
            barrier = threading.Barrier(2)

            def schedule(
                bind: sa.Engine, at: float = now, gate: threading.Barrier = barrier
            ) -> None:
                gate.wait()
                fired.extend(fire_due(jobs, bind, at))
                fired.extend(fire_due(jobs, bind, at + 1))  # later in the same tick: nothing

            threads = [threading.Thread(target=schedule, args=(b,)) for b in (engine, other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        other.dispose()
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar()
    assert fired == ["hourly-report"] * 5
    assert count == 5


@pytest.mark.postgres
def test_a_handler_blocking_the_event_loop_keeps_its_lease(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    jobs = Jobs()
    runs: list[int] = []

    @jobs.task
    async def hog(ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        time.sleep(3.0)  # noqa: ASYNC251 - the point: block the loop for three leases

    with pg_engine.begin() as conn:
        job = hog.enqueue(conn)
    first = Worker(jobs, pg_url, worker_id="first", **FAST)
    thread = threading.Thread(target=first.run_sync)
    thread.start()
    wait_until(lambda: runs, timeout=20, message="job started")
    second = Worker(jobs, pg_url, worker_id="second", **FAST)  # rescues expired leases
    rescuer = threading.Thread(target=second.run_sync)
    rescuer.start()
    wait_until(lambda: status(pg_engine, job).state.finished, timeout=30, message="done")
    first.stop()
    second.stop()
    thread.join(30)
    rescuer.join(30)
    done = status(pg_engine, job)
    assert runs == [1]
    assert (done.state, done.crashes, done.attempts) == (JobState.SUCCEEDED, 0, 1)
