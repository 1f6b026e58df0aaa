"""The README's background-jobs example runs as written (stub mailer and order insert)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from safeship.jobs import JobState, status

from .conftest import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_jobs_example_enqueues_in_the_transaction_and_a_worker_runs_it(
    sqlite_engine: sa.Engine,
) -> None:
    section = README.read_text().split("## Background jobs", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1).replace(
        "jobs.worker(engine).run_sync()", "worker = jobs.worker(engine, poll=0.05)"
    )
    sent: list[int] = []

    class Mailer:
        async def send(self, order_id: int) -> None:
            sent.append(order_id)

    namespace: dict[str, Any] = {
        "engine": sqlite_engine,
        "mailer": Mailer(),
        "insert_order": lambda conn, cart: 42,
        "cart": None,
        "print": lambda *_: None,
    }
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README
    worker = namespace["worker"]
    thread = threading.Thread(target=worker.run_sync)
    thread.start()
    job_id = namespace["job_id"]
    try:
        wait_until(lambda: status(sqlite_engine, job_id).state.finished, timeout=20, message="ran")
    finally:
        worker.stop()
        thread.join(30)
    assert status(sqlite_engine, job_id).state is JobState.SUCCEEDED
    assert status(sqlite_engine, job_id).result == {"sent": 42}
    assert sent == [42]
