"""A worker process for the crash tests: ``python worker_proc.py URL SLOW_FIRST``.

Each job records that it started (autocommit), sleeps when it is its first attempt and
``SLOW_FIRST`` is 1 (so a test can kill the process mid-job), then writes its effect and
completes itself in one transaction: an effect row exists iff the job is done.
"""

from __future__ import annotations

import sys
import time

import sqlalchemy as sa

from safeship.db import create_engine
from safeship.jobs import JobContext, Jobs, Worker

jobs = Jobs()
ENGINE: sa.Engine | None = None
SLOW_FIRST = False


@jobs.task(queue="crash")
def effect(ctx: JobContext, n: int) -> None:
    assert ENGINE is not None
    with ENGINE.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO started (n, attempt, at) VALUES (:n, :a, clock_timestamp())"),
            {"n": n, "a": ctx.attempt},
        )
    if SLOW_FIRST and ctx.attempt == 1:
        time.sleep(120)
    with ENGINE.begin() as conn:
        conn.execute(sa.text("INSERT INTO effects (n) VALUES (:n)"), {"n": n})
        ctx.complete(conn)


def main() -> None:
    global ENGINE, SLOW_FIRST
    url, slow = sys.argv[1], sys.argv[2]
    ENGINE = create_engine(url)
    SLOW_FIRST = slow == "1"
    Worker(jobs, url, concurrency=8).run_sync()


if __name__ == "__main__":
    main()
