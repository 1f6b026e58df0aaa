"""``Idempotency-Key`` on a 202 job-creating route: the same key maps to the same job.

``accepted_in`` records the 202 for the request's key in the transaction that enqueues the
job, so the job and the key's answer commit together: a retry replays the job's id, a
rolled-back request leaves neither a job nor a recorded key, and concurrent requests with
one key create one job (on SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request

from safeship.idempotency import (
    IdempotencyMiddleware,
    SqlStore,
    idempotent,
    key_of,
    principal_from_header,
)
from safeship.jobs import JobContext, Jobs, accepted_in, status
from safeship.jobs import _schema as schema


def _app(engine: sa.Engine) -> FastAPI:
    jobs = Jobs()

    @jobs.task(queue="reports")
    def build_report(ctx: JobContext, month: str) -> None:
        return None

    app = FastAPI()

    @app.post("/reports", status_code=202)
    @idempotent(required=False, ttl=3600)
    def create_report(request: Request, body: dict[str, Any]) -> Any:
        with engine.begin() as conn:
            job_id = build_report.enqueue(conn, month=str(body["month"]))
            response = accepted_in(conn, request, job_id, prefix="/reports/jobs")
            handle = key_of(request)
            if handle is not None and not handle.recorded:  # recorded here, in this transaction
                raise HTTPException(500, "the key's answer was not recorded in the transaction")
            if body.get("fail"):  # after the key was recorded: both roll back
                raise HTTPException(500, "the report service failed")
            return response

    app.add_middleware(
        IdempotencyMiddleware, store=SqlStore(engine), principal=principal_from_header("x-api-key")
    )
    return app


def _job_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.jobs)).scalar_one())


async def test_the_same_key_gets_the_same_job_and_another_key_another(engine: sa.Engine) -> None:
    transport = httpx.ASGITransport(app=_app(engine))
    key = {"idempotency-key": f'"{uuid.uuid4()}"', "x-api-key": "caller-1"}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        first = await client.post("/reports", json={"month": "2026-11"}, headers=key)
        retry = await client.post("/reports", json={"month": "2026-11"}, headers=key)
        other_body = await client.post("/reports", json={"month": "2026-10"}, headers=key)
        other_key = await client.post(
            "/reports", json={"month": "2026-11"}, headers={**key, "idempotency-key": '"k2"'}
        )
        no_key = await client.post("/reports", json={"month": "2026-11"})
    assert first.status_code == retry.status_code == 202, first.text
    job_id = first.json()["id"]
    assert first.headers["location"] == f"/reports/jobs/{job_id}"
    assert retry.json()["id"] == job_id and retry.headers["location"] == first.headers["location"]
    assert retry.headers["retry-after"] == "1"
    assert retry.headers["idempotent-replayed"] == "true"
    assert other_body.status_code == 422  # the same key with another payload is refused
    assert other_key.status_code == 202 and other_key.json()["id"] != job_id
    assert no_key.status_code == 202
    assert _job_count(engine) == 3  # first, the other key's, the keyless one
    assert status(engine, job_id).task == "build_report"


async def test_a_rolled_back_request_leaves_no_job_and_no_answer_for_its_key(
    engine: sa.Engine,
) -> None:
    transport = httpx.ASGITransport(app=_app(engine))
    key = {"idempotency-key": '"r1"', "x-api-key": "caller-1"}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        failed = await client.post("/reports", json={"month": "m", "fail": True}, headers=key)
        again = await client.post("/reports", json={"month": "m", "fail": True}, headers=key)
    assert failed.status_code == 500
    assert _job_count(engine) == 0  # the job rolled back with the key's answer
    assert again.status_code != 202  # never a 202 naming a job that does not exist


async def test_concurrent_requests_with_one_key_create_one_job(engine: sa.Engine) -> None:
    transport = httpx.ASGITransport(app=_app(engine))
    key = {"idempotency-key": '"c1"', "x-api-key": "caller-1"}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        answers = await asyncio.gather(
            *(client.post("/reports", json={"month": "m"}, headers=key) for _ in range(10))
        )
        settled = await client.post("/reports", json={"month": "m"}, headers=key)
    accepted = [a for a in answers if a.status_code == 202]
    assert accepted and {a.status_code for a in answers} <= {202, 409}
    assert len({a.json()["id"] for a in accepted}) == 1
    assert settled.status_code == 202 and settled.json()["id"] == accepted[0].json()["id"]
    assert _job_count(engine) == 1
