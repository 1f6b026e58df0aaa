"""Background jobs in the control plane's API: queue stats, a job's status resource, dead
letters, and cancel / retry (admin, audited)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from safeship import jobs
from safeship.db import record_audit
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.inputs import Body, Reason
from safeship.server.state import plane

api = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
TaskName = Annotated[
    str | None, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")
]


class Count(BaseModel):
    count: int


class RetryBody(Body):
    """Which dead letters go back to pending: these ids, this task's, or (``everything``) all."""

    ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    task: str | None = Field(default=None, min_length=1, max_length=100)
    everything: bool = False
    reason: Reason = None


class CancelBody(Body):
    reason: Reason = None


@api.get("/stats", summary="Jobs per queue: pending, running, interrupted, dead, oldest wait")
def get_stats(request: Request, _: ReadPrincipal) -> list[dict[str, Any]]:
    return [_row(row) for row in jobs.stats(plane(request).engine)]


def _row(row: jobs.QueueStats) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__dataclass_fields__}


@api.get("/dead", summary="Dead letters, newest first, with their error history")
def list_dead(
    request: Request,
    _: ReadPrincipal,
    task: TaskName = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    rows = jobs.dead_letters(plane(request).engine, task=task, limit=limit)
    return [row.as_dict() for row in rows]


@api.get(
    "/{job_id}",
    summary="A job's status: state, attempts, progress, result or errors",
    responses={404: {"description": "no such job"}},
)
def get_job(request: Request, job_id: uuid.UUID, _: ReadPrincipal) -> dict[str, Any]:
    try:
        return jobs.status(plane(request).engine, job_id).as_dict()
    except jobs.UnknownJobError:
        raise HTTPException(status_code=404, detail="no such job") from None


@api.post(
    "/{job_id}/cancel",
    summary="Cancel a job: at once if pending, cooperatively if running (audited)",
    responses={404: {"description": "no such job"}},
)
def cancel_job(
    request: Request, job_id: uuid.UUID, body: CancelBody, who: AdminPrincipal
) -> dict[str, str]:
    with plane(request).engine.begin() as conn:
        try:
            state = jobs.cancel(conn, job_id)
        except jobs.UnknownJobError:
            raise HTTPException(status_code=404, detail="no such job") from None
        record_audit(
            conn,
            actor=who.actor,
            action="jobs.cancel",
            target=f"job:{job_id}",
            after={"state": state.value},
            reason=body.reason,
        )
    return {"state": state.value}


@api.post(
    "/dead/retry", response_model=Count, summary="Move dead letters back to pending (audited)"
)
def retry_dead(request: Request, body: RetryBody, who: AdminPrincipal) -> Count:
    if not body.ids and body.task is None and not body.everything:
        raise HTTPException(status_code=422, detail="give ids, a task, or everything=true")
    with plane(request).engine.begin() as conn:
        count = jobs.retry_dead(conn, ids=body.ids or None, task=body.task)
        record_audit(
            conn,
            actor=who.actor,
            action="jobs.retry",
            target="jobs:dead",
            after={"count": count, "task": body.task, "ids": [str(i) for i in body.ids]},
            reason=body.reason,
        )
    return Count(count=count)
