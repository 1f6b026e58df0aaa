"""A Jobs registry for worker processes in the database-fault tests: ``sleepy`` records
nothing and sleeps ``seconds``, so its outcome is written by the worker's own connections."""

from __future__ import annotations

import time

from safeship.jobs import JobContext, Jobs

jobs = Jobs()


@jobs.task(queue="dbfault-proc")
def sleepy(ctx: JobContext, seconds: float) -> None:
    time.sleep(seconds)
