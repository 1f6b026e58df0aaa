"""A queue's concurrency limit holds across every worker of the fleet; graceful shutdown
hands unfinished jobs back without using an attempt."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa

from safeship.jobs import JobContext, Jobs, JobState, Worker, status

from .conftest import run_two_workers_until_finished

FAST: dict[str, Any] = {"heartbeat": 0.2, "lease": 2.0, "poll": 0.05, "rescue_every": 0.2}


def test_a_queue_limit_holds_across_two_workers(engine: sa.Engine) -> None:
    jobs = Jobs()
    jobs.queue("reports", concurrency=2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @jobs.task(queue="reports")
    def build(ctx: JobContext, n: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.15)
        with lock:
            running[0] -= 1

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, build, [{"n": i} for i in range(10)])
    run_two_workers_until_finished(jobs, engine, ids, concurrency=10, **FAST)
    assert peak[0] == 2
    assert {status(engine, i).state for i in ids} == {JobState.SUCCEEDED}


def test_shutdown_hands_back_a_job_that_outlives_the_grace(engine: sa.Engine) -> None:
    jobs = Jobs()
    started = threading.Event()

    @jobs.task
    def slow(ctx: JobContext) -> None:
        started.set()
        ctx.cancelled.wait(30)  # stops when its attempt is handed back

    with engine.begin() as conn:
        job = slow.enqueue(conn)
    worker = Worker(jobs, engine, shutdown_grace=0.2, **FAST)
    thread = threading.Thread(target=worker.run_sync)
    thread.start()
    assert started.wait(20)
    worker.stop()
    thread.join(30)
    back = status(engine, job)
    assert (back.state, back.attempts, back.crashes) == (JobState.PENDING, 0, 0)
