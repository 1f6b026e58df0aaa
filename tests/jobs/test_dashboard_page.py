"""The dashboard's Jobs page: queue figures, stored history, dead letters with audited,
CSRF-checked retry and a purge guarded by the count the operator saw; the purge API."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db import create_engine, upgrade
from safeship.jobs import JobContext, Jobs, JobState, count_dead, status
from safeship.jobs._store import Outcome
from safeship.jobs._store_sqlite import SqliteStore
from safeship.server import create_app
from safeship.server._samples import Sampler, jobs_points
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, make_settings


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[TestClient, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    upgrade(engine)
    app = create_app(make_settings(url), engine=engine, sample_interval=None)
    with TestClient(app, base_url="http://testserver") as client:
        yield client, engine
    engine.dispose()


def _jobs(engine: sa.Engine, dead: int, waiting: int) -> list[uuid.UUID]:
    """``dead`` dead letters (queue mail) and ``waiting`` pending jobs (queue reports)."""
    jobs = Jobs()

    @jobs.task(queue="mail")
    def send(ctx: JobContext, n: int) -> None:
        return None

    @jobs.task(queue="reports")
    def report(ctx: JobContext, n: int) -> None:
        return None

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, send, [{"n": i} for i in range(dead)])
        jobs.enqueue_many(conn, report, [{"n": i} for i in range(waiting)])
    store = SqliteStore(engine)
    claimed = store.claim_sync(["mail"], dead, "page-test", 30)
    error = json.dumps({"attempt": 1, "kind": "error", "message": "SMTP refused", "at": "now"})
    store.finish_sync([Outcome(c.id, c.token, "dead", error=error) for c in claimed])
    return list(ids)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _audit(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action, actor FROM safeship_audit ORDER BY id"))
        return [(r[0], r[1]) for r in rows if r[0].startswith("jobs.")]


def test_jobs_page_shows_queues_history_and_dead_letters_and_steers_them(
    plane: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = plane
    ids = _jobs(engine, dead=3, waiting=2)
    Sampler(engine, lambda: jobs_points(engine)).sample_once()
    assert client.get("/jobs", follow_redirects=False).status_code == 303  # signed out
    client.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
    page = client.get("/jobs")
    assert page.status_code == 200, page.text
    assert re.search(r'data-queue="mail".*?data-stat="dead">3<', page.text, re.S)
    assert re.search(r'data-queue="reports".*?data-stat="pending">2<', page.text, re.S)
    assert all(str(i) in page.text for i in ids) and "SMTP refused" in page.text
    assert 'id="chart-jobs-history"' in page.text and 'data-count="1"' in page.text
    assert 'href="/jobs" aria-current="page"' in page.text
    token = _csrf(page.text)

    # Unsafe posts without the session's CSRF token are refused and change nothing.
    forged = client.post("/jobs/retry", data={"csrf_token": "x", "job_id": str(ids[0])})
    assert forged.status_code == 403
    assert status(engine, ids[0]).state is JobState.DEAD

    retried = client.post(
        "/jobs/retry", data={"csrf_token": token, "job_id": str(ids[0])}, follow_redirects=False
    )
    assert retried.status_code == 303
    assert "retried 1" in client.get(retried.headers["location"]).text
    assert status(engine, ids[0]).state is JobState.PENDING

    # The page showed 3 dead letters; 2 are left: a purge of 3 deletes nothing.
    stale = client.post("/jobs/purge", data={"csrf_token": token, "expected": "3"})
    assert "2 dead letters match, not the 3 confirmed" in stale.text
    assert count_dead(engine) == 2
    purged = client.post("/jobs/purge", data={"csrf_token": token, "expected": "2"})
    assert "purged 2" in purged.text and count_dead(engine) == 0
    assert _audit(engine) == [("jobs.retry", "key:operator"), ("jobs.purge", "key:operator")]


def test_a_read_key_sees_the_page_but_cannot_retry_or_purge(
    plane: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = plane
    (job,) = _jobs(engine, dead=1, waiting=0)
    client.post("/login", data={"key": READ_KEY}, follow_redirects=False)
    page = client.get("/jobs")
    assert page.status_code == 200 and str(job) in page.text
    assert 'action="/jobs/purge"' not in page.text  # no buttons for a read key
    refused = client.post("/jobs/purge", data={"csrf_token": _csrf(page.text), "expected": "1"})
    assert refused.status_code == 403 and count_dead(engine) == 1


def test_purge_api_requires_the_confirmed_count(plane: tuple[TestClient, sa.Engine]) -> None:
    client, engine = plane
    _jobs(engine, dead=2, waiting=0)
    wrong = client.post("/api/v1/jobs/dead/purge", json={"expected": 1}, headers=admin_headers())
    assert wrong.status_code == 409 and "2 dead letters match" in wrong.text
    assert count_dead(engine) == 2
    missing = client.post("/api/v1/jobs/dead/purge", json={}, headers=admin_headers())
    assert missing.status_code == 422
    right = client.post(
        "/api/v1/jobs/dead/purge", json={"expected": 2, "task": "send"}, headers=admin_headers()
    )
    assert right.json() == {"count": 2} and count_dead(engine) == 0
