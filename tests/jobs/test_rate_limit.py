"""A queue's rate limit holds across every worker of the fleet: starts are counted in
windows aligned to the period, on the clock the database records them with."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.jobs import JobContext, Jobs

from .conftest import run_two_workers_until_finished

FAST: dict[str, Any] = {"heartbeat": 0.2, "lease": 2.0, "poll": 0.05, "rescue_every": 0.2}
PERIOD = 0.5
PER_WINDOW = 4
JOBS = 24


def test_a_queue_rate_holds_across_two_workers(engine: sa.Engine) -> None:
    jobs = Jobs()
    jobs.queue("mail", rate=f"{PER_WINDOW}/{PERIOD}s")
    loops: set[int] = set()

    @jobs.task(queue="mail")
    async def send(ctx: JobContext, n: int) -> None:
        loops.add(id(asyncio.get_running_loop()))

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, send, [{"n": i} for i in range(JOBS)])
    run_two_workers_until_finished(jobs, engine, ids, concurrency=50, **FAST)
    history = sa.table("safeship_jobs_history", sa.column("started_at"), sa.column("state"))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(history.c.started_at, history.c.state)).all()
    assert len(rows) == JOBS and {r.state for r in rows} == {"succeeded"}
    starts = sorted(r.started_at for r in rows)
    windows = Counter(math.floor(_epoch(s) / PERIOD) for s in starts)
    assert max(windows.values()) == PER_WINDOW, windows  # the limit, reached and never passed
    assert len(windows) >= JOBS // PER_WINDOW
    # 24 starts at 4 per 0.5 s window take six windows: the first start may close the
    # first window and the last open the sixth, so at least four whole windows lie between.
    assert _epoch(starts[-1]) - _epoch(starts[0]) >= (JOBS // PER_WINDOW - 2) * PERIOD


def _epoch(moment: Any) -> float:
    from safeship.jobs._store_sqlite import read_time

    return float(read_time(moment).timestamp())


def test_a_queue_rate_and_concurrency_are_kept_together() -> None:
    jobs = Jobs()
    jobs.queue("mail", concurrency=3, rate="100/m")
    jobs.queue("sms", rate="10/5s")
    assert jobs.limits == {"mail": 3, "sms": None}
    assert jobs.rates == {"mail": (100, 60.0), "sms": (10, 5.0)}
    jobs.queue("sms", rate=None)
    assert jobs.rates == {"mail": (100, 60.0)}


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("abc", "rate must look like"),
        ("100", "rate must look like"),
        ("-1/s", "rate must look like"),
        ("1.5/s", "rate must look like"),
        ("10/d", "rate must look like"),
        (0, "rate must look like"),
        (-5, "rate must look like"),
        ("0/s", "starts per period must be in"),
        ("2000000/s", "starts per period must be in"),
        ("10/0s", "the period must be in"),
        ("10/2d", "rate must look like"),
        ("1/25h", "the period must be in"),
    ],
)
def test_a_bad_rate_is_refused_with_a_clear_error(rate: Any, message: str) -> None:
    jobs = Jobs()
    with pytest.raises(ValueError, match=message):
        jobs.queue("mail", rate=rate)
    assert jobs.rates == {} and jobs.limits == {}
