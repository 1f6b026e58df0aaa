"""The HTTP contract: 202 + Location + Retry-After, then a status resource at Location."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from safeship.jobs import JobContext, Jobs, accepted, cancel, status_response


def _app(engine: sa.Engine) -> Starlette:
    jobs = Jobs()

    @jobs.task
    def send(ctx: JobContext, order_id: int) -> None:
        return None

    async def create(request: Request) -> Any:
        with engine.begin() as conn:
            job = send.enqueue(conn, order_id=int(request.query_params["order_id"]))
        return accepted(job, retry_after=2)

    async def show(request: Request) -> Any:
        return status_response(engine, request.path_params["job_id"])

    return Starlette(
        routes=[Route("/orders", create, methods=["POST"]), Route("/jobs/{job_id}", show)]
    )


def test_accepted_points_at_a_status_resource_that_reports_the_job(
    sqlite_engine: sa.Engine,
) -> None:
    client = TestClient(_app(sqlite_engine))
    reply = client.post("/orders", params={"order_id": 5})
    assert reply.status_code == 202
    assert reply.headers["retry-after"] == "2"
    location = reply.headers["location"]
    assert location == f"/jobs/{reply.json()['id']}"
    pending = client.get(location)
    assert pending.status_code == 200
    assert pending.json()["state"] == "pending" and pending.headers["retry-after"] == "1"
    cancel(sqlite_engine, reply.json()["id"])
    done = client.get(location)
    assert done.json()["state"] == "cancelled" and "retry-after" not in done.headers


def test_unknown_or_malformed_ids_are_404(sqlite_engine: sa.Engine) -> None:
    client = TestClient(_app(sqlite_engine))
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert client.get("/jobs/not-a-uuid").status_code == 404


def test_bad_prefix_or_retry_after_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        accepted(uuid.uuid4(), prefix="jobs")
    with pytest.raises(ValueError, match="retry_after"):
        accepted(uuid.uuid4(), retry_after=-1)
