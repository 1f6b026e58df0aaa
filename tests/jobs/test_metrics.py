"""A worker given ``JobMetrics`` counts starts and outcomes in the default registry."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from prometheus_client import REGISTRY

from safeship.jobs import JobContext, JobMetrics, Jobs, JobState, Retry, status

from .conftest import await_until


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_worker_metrics_count_started_and_finished_by_state(sqlite_engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(name="metered", queue="metered", retry=Retry(attempts=1))
    def metered(ctx: JobContext, fail: bool) -> None:
        if fail:
            raise RuntimeError("no")

    before = (
        _value("safeship_jobs_started_total", task="metered", queue="metered"),
        _value("safeship_jobs_finished_total", task="metered", queue="metered", state="succeeded"),
        _value("safeship_jobs_finished_total", task="metered", queue="metered", state="dead"),
    )
    with sqlite_engine.begin() as conn:
        ids = [metered.enqueue(conn, fail=False), metered.enqueue(conn, fail=True)]
    worker = jobs.worker(sqlite_engine, poll=0.05, metrics=JobMetrics())
    runner = asyncio.create_task(worker.run())
    await await_until(
        lambda: all(status(sqlite_engine, i).state.finished for i in ids), timeout=20, message="ran"
    )
    worker.stop()
    await runner
    assert status(sqlite_engine, ids[1]).state is JobState.DEAD
    after = (
        _value("safeship_jobs_started_total", task="metered", queue="metered"),
        _value("safeship_jobs_finished_total", task="metered", queue="metered", state="succeeded"),
        _value("safeship_jobs_finished_total", task="metered", queue="metered", state="dead"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]
