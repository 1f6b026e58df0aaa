"""Background jobs in the control plane: queue stats, a job's status resource, dead
letters, cancel / retry / purge (admin, audited) — the API and the dashboard's Jobs page."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from safeship import jobs
from safeship.db import record_audit
from safeship.server import _charts as charts
from safeship.server import _samples
from safeship.server._notices import notice, notice_redirect
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.inputs import Body, Reason
from safeship.server.routes.dashboard import admin_form_session, page_session, render
from safeship.server.state import ControlPlane, plane

api = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
pages = APIRouter(include_in_schema=False)
#: The most dead letters one purge may confirm (the API body and the dashboard form).
MAX_PURGE = 10_000_000
#: How far back the page's stored chart reaches.
CHART_HISTORY = timedelta(hours=6)
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


class PurgeBody(Body):
    """Which dead letters to delete (these ids, this task's, or all) and how many the
    operator confirms: if another number matches, nothing is deleted (409)."""

    ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    task: str | None = Field(default=None, min_length=1, max_length=100)
    expected: int = Field(ge=0, le=MAX_PURGE, description="How many you confirm deleting.")
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


@api.post(
    "/dead/purge",
    response_model=Count,
    summary="Delete dead letters, only if `expected` of them match (audited)",
    responses={409: {"description": "the number matching is not the number confirmed"}},
)
def purge_dead(request: Request, body: PurgeBody, who: AdminPrincipal) -> Count:
    try:
        return Count(count=_purge(plane(request), body, who.actor))
    except jobs.PurgeMismatchError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


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


def _retry(cp: ControlPlane, ids: list[uuid.UUID], actor: str, reason: str | None) -> int:
    with cp.engine.begin() as conn:
        count = jobs.retry_dead(conn, ids=ids or None)
        record_audit(
            conn,
            actor=actor,
            action="jobs.retry",
            target="jobs:dead",
            after={"count": count, "task": None, "ids": [str(i) for i in ids]},
            reason=reason,
        )
    return count


def _purge(cp: ControlPlane, body: PurgeBody, actor: str) -> int:
    with cp.engine.begin() as conn:
        count = jobs.purge_dead(conn, ids=body.ids or None, task=body.task, expected=body.expected)
        record_audit(
            conn,
            actor=actor,
            action="jobs.purge",
            target="jobs:dead",
            before={"count": count, "task": body.task, "ids": [str(i) for i in body.ids]},
            reason=body.reason,
        )
    return count


def stored_jobs_chart(cp: ControlPlane) -> dict[str, Any] | None:
    """Pending, running and dead jobs (all queues) over the stored samples, or None."""
    now = datetime.now(UTC)
    try:
        stored = _samples.read_series(cp.engine, since=now - CHART_HISTORY, kind="jobs")
    except Exception:  # noqa: BLE001 - no history is no reason to fail the page
        return None
    totals: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for series in stored:
        for at, value in series.points:
            totals[series.metric][at] += value
    first = min((s.points[0][0] for s in stored if s.points), default=now - timedelta(hours=1))
    lines = [
        charts.Line(label, css, tuple(sorted(totals.get(metric, {}).items())))
        for metric, label, css in (
            ("pending", "pending", "pending"),
            ("running", "running", "control"),
            ("dead", "dead letters", "dead"),
        )
    ]
    return charts.line_chart(
        lines, start=min(first, now - timedelta(minutes=5)), end=now, unit="jobs"
    )


@pages.get("/jobs")
def jobs_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    queues = jobs.stats(cp.engine)
    dead = jobs.dead_letters(cp.engine, limit=50)
    return render(
        request,
        "jobs.html",
        queues=[_row(q) for q in queues],
        total_dead=jobs.count_dead(cp.engine),
        dead=[_dead_row(d) for d in dead],
        held=[_dead_row(d) for d in jobs.interrupted(cp.engine, limit=50)],
        history_chart=stored_jobs_chart(cp),
        message=notice(request),
    )


def _dead_row(job: jobs.JobStatus) -> dict[str, Any]:
    last = job.errors[-1] if job.errors else {}
    message = last.get("message", "") if isinstance(last, dict) else str(last)
    return {
        "id": str(job.id),
        "task": job.task,
        "queue": job.queue,
        "attempts": job.attempts,
        "crashes": job.crashes,
        "last_error": str(message),
        "finished_at": job.finished_at or job.started_at or job.created_at,
    }


@pages.post("/jobs/retry")
def retry_form(
    request: Request,
    job_id: Annotated[str, Form(max_length=64)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        ids = [uuid.UUID(job_id)] if job_id else []
    except ValueError:
        return render(request, "error.html", 422, message="job_id must be a job id (a UUID).")
    count = _retry(plane(request), ids, session.actor, "dashboard")
    return notice_redirect(request, "/jobs", f"retried {count}")


@pages.post("/jobs/purge")
def purge_form(
    request: Request,
    expected: Annotated[int, Form(ge=0, le=MAX_PURGE)] = 0,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    body = PurgeBody(expected=expected, reason="dashboard")
    try:
        count = _purge(plane(request), body, session.actor)
    except jobs.PurgeMismatchError as exc:
        return notice_redirect(request, "/jobs", str(exc))
    return notice_redirect(request, "/jobs", f"purged {count}")
