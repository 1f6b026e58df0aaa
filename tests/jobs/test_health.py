"""The jobs health check passes on a healthy queue and warns on waits and dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import sqlalchemy as sa

from safeship.jobs import JobContext, Jobs, jobs_check
from safeship.jobs._store import Outcome
from safeship.jobs._store_pg import PostgresStore
from safeship.jobs._store_sqlite import SqliteStore
from safeship.observe.health import HealthRegistry


def _run(engine: sa.Engine) -> tuple[str, str | None]:
    registry = HealthRegistry()
    registry.add("jobs", jobs_check(engine, max_wait=3600), kinds=("readiness",))
    report = asyncio.run(registry.run("readiness"))
    return report.status, report.checks["jobs"].output


def test_jobs_check_passes_then_warns_on_a_dead_letter(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task
    def send(ctx: JobContext) -> None:
        return None

    assert _run(engine)[0] == "pass"
    with engine.begin() as conn:
        job = send.enqueue(conn)
    error = json.dumps({"attempt": 1, "kind": "error", "message": "x", "at": "now"})
    if engine.dialect.name == "sqlite":
        store = SqliteStore(engine)
        (claimed,) = store.claim_sync(["default"], 1, "t", 30)
        store.finish_sync([Outcome(job, claimed.token, "dead", error=error)])
    else:
        asyncio.run(_bury_on_postgres(engine, job, error))
    status, output = _run(engine)
    assert status == "warn" and "1 dead letters" in (output or "")


async def _bury_on_postgres(engine: sa.Engine, job: uuid.UUID, error: str) -> None:
    store = PostgresStore(engine.url.render_as_string(hide_password=False))
    await store.open()
    try:
        (claimed,) = await store.claim(["default"], 1, "t", 30)
        assert await store.finish([Outcome(job, claimed.token, "dead", error=error)]) == {job}
    finally:
        await store.close()


def test_bad_thresholds_are_refused(sqlite_engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="positive"):
        jobs_check(sqlite_engine, max_wait=0)
