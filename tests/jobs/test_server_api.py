"""The control plane's jobs API: stats, status by id, dead letters, cancel and retry."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db import create_engine, upgrade
from safeship.jobs import JobContext, Jobs
from safeship.jobs._store import Outcome
from safeship.jobs._store_sqlite import SqliteStore
from safeship.server import create_app
from tests.server.support import admin_headers, make_settings, read_headers


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[TestClient, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    upgrade(engine)
    with TestClient(create_app(make_settings(url), engine=engine)) as client:
        yield client, engine
    engine.dispose()


def test_jobs_api_reports_and_steers_jobs(plane: tuple[TestClient, sa.Engine]) -> None:
    client, engine = plane
    jobs = Jobs()

    @jobs.task(queue="mail")
    def send(ctx: JobContext) -> None:
        return None

    with engine.begin() as conn:
        dead, waiting = send.enqueue(conn), send.enqueue(conn)
    store = SqliteStore(engine)
    claimed = next(c for c in store.claim_sync(["mail"], 2, "t", 30) if c.id == dead)
    store.finish_sync([Outcome(dead, claimed.token, "dead", error=json.dumps({"message": "x"}))])
    assert client.get("/api/v1/jobs/stats").status_code == 401
    stats = client.get("/api/v1/jobs/stats", headers=read_headers()).json()
    assert stats[0]["queue"] == "mail" and stats[0]["dead"] == 1
    listed = client.get("/api/v1/jobs/dead", headers=read_headers()).json()
    assert [row["id"] for row in listed] == [str(dead)]
    shown = client.get(f"/api/v1/jobs/{dead}", headers=read_headers()).json()
    assert shown["state"] == "dead" and shown["errors"] == [{"message": "x"}]
    assert client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=read_headers()).status_code == 404
    assert client.get("/api/v1/jobs/nope", headers=read_headers()).status_code == 422
    refused = client.post(f"/api/v1/jobs/{waiting}/cancel", json={}, headers=read_headers())
    assert refused.status_code == 403
    cancelled = client.post(f"/api/v1/jobs/{waiting}/cancel", json={}, headers=admin_headers())
    assert cancelled.json() == {"state": "running"}  # claimed above: asked to stop
    assert (
        client.post("/api/v1/jobs/dead/retry", json={}, headers=admin_headers()).status_code == 422
    )
    retried = client.post(
        "/api/v1/jobs/dead/retry", json={"ids": [str(dead)]}, headers=admin_headers()
    )
    assert retried.json() == {"count": 1}
    assert client.get(f"/api/v1/jobs/{dead}", headers=read_headers()).json()["state"] == "pending"
