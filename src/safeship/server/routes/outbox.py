"""The transactional outbox in the control plane: backlog stats, peek, and dead-letter
retry and purge (audited) — the API and the dashboard page."""

from __future__ import annotations

import threading
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, Field

from safeship.db import record_audit
from safeship.outbox import admin
from safeship.outbox._history import BacklogHistory, chart_points
from safeship.server._notices import notice, notice_redirect
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.errors import invalid
from safeship.server.inputs import Body, Flag, Reason, Text, Whole, clean_param
from safeship.server.routes.dashboard import admin_form_session, page_session, render
from safeship.server.routes.overview import stored_backlog_chart
from safeship.server.state import plane

api = APIRouter(prefix="/api/v1/outbox", tags=["outbox"])
pages = APIRouter(include_in_schema=False)
Key = Annotated[str | None, Query(min_length=1, max_length=255), AfterValidator(clean_param)]
KeyText = Annotated[Text | None, Field(min_length=1, max_length=255)]
CHART_WIDTH, CHART_HEIGHT = 600, 120
#: The most dead letters one purge may confirm (the API body and the dashboard form).
MAX_PURGE = 10_000_000
_HISTORY_LOCK = threading.Lock()


def history(request: Request) -> BacklogHistory:
    """This app's backlog history (on ``app.state``), created on first use."""
    state = request.app.state
    found = getattr(state, "outbox_history", None)
    if isinstance(found, BacklogHistory):
        return found
    with _HISTORY_LOCK:
        found = getattr(state, "outbox_history", None)
        if not isinstance(found, BacklogHistory):
            found = BacklogHistory()
            state.outbox_history = found
        return found


class Selection(Body):
    """Which dead letters an operation touches."""

    ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    aggregate_type: KeyText = None
    aggregate_id: KeyText = None
    type: KeyText = None
    reason: Reason = None

    def filter(self) -> admin.Filter:
        return admin.Filter(
            ids=tuple(self.ids),
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            type=self.type,
        )

    def described(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"reason"}, exclude_none=True)
        return {k: v for k, v in out.items() if v}


class RetryBody(Selection):
    everything: Flag = Field(default=False, description="Required to retry with no filter.")


class PurgeBody(Selection):
    expected: Whole = Field(ge=0, le=MAX_PURGE, description="How many you confirm deleting.")


class Count(BaseModel):
    count: int


@api.get(
    "/stats",
    summary="Pending, retrying, in-flight and dead events, oldest age, relays, delivery rate",
)
def get_stats(request: Request, _: ReadPrincipal) -> dict[str, Any]:
    reading = admin.stats(plane(request).engine)
    history(request).offer(reading)
    return reading.to_dict()


@api.get(
    "/history",
    summary="Recent backlog samples (pending, dead, in flight, delivered/s), oldest first",
    description="The control plane samples the stats at most every few seconds while "
    "this endpoint or the dashboard page is requested, and keeps the last 360 samples "
    "in memory (per process; empty after a restart).",
)
def get_history(request: Request, _: ReadPrincipal) -> dict[str, Any]:
    ring = history(request)
    ring.sample(lambda: admin.stats(plane(request).engine))
    return ring.to_dict()


@api.get("/events", summary="The oldest pending events or dead letters")
def list_events(
    request: Request,
    _: ReadPrincipal,
    where: Literal["pending", "dead"] = "pending",
    aggregate_type: Key = None,
    aggregate_id: Key = None,
    type: Key = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    match = admin.Filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id, type=type)
    rows = admin.peek(plane(request).engine, where=where, match=match, limit=limit)
    return [row.to_dict() for row in rows]


def _retry(request: Request, body: RetryBody, actor: str) -> int:
    with plane(request).engine.begin() as conn:
        count = admin.retry(conn, match=body.filter(), everything=body.everything)
        record_audit(
            conn,
            actor=actor,
            action="outbox.retry",
            target="outbox:dead",
            after={"count": count, **body.described()},
            reason=body.reason,
        )
    return count


def _purge(request: Request, body: PurgeBody, actor: str) -> int:
    with plane(request).engine.begin() as conn:
        count = admin.purge(conn, match=body.filter(), expected=body.expected)
        record_audit(
            conn,
            actor=actor,
            action="outbox.purge",
            target="outbox:dead",
            before={"count": count, **body.described()},
            reason=body.reason,
        )
    return count


@api.post("/dead/retry", response_model=Count, summary="Move dead letters back (audited)")
def retry_dead(request: Request, body: RetryBody, who: AdminPrincipal) -> Count:
    try:
        return Count(count=_retry(request, body, who.actor))
    except ValueError as exc:
        raise invalid("everything", str(exc)) from exc


@api.post(
    "/dead/purge",
    response_model=Count,
    summary="Delete dead letters, only if `expected` of them match (audited)",
    responses={409: {"description": "the number matching is not the number confirmed"}},
)
def purge_dead(request: Request, body: PurgeBody, who: AdminPrincipal) -> Count:
    try:
        return Count(count=_purge(request, body, who.actor))
    except admin.PurgeMismatchError as exc:
        raise HTTPException(409, str(exc)) from exc


@pages.get("/outbox")
def outbox_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    engine = plane(request).engine
    reading = admin.stats(engine)
    ring = history(request)
    ring.offer(reading)
    samples = ring.samples()
    top = max([1, *(max(s.pending, s.dead) for s in samples)])
    return render(
        request,
        "outbox.html",
        stats=reading,
        chart={
            "width": CHART_WIDTH,
            "height": CHART_HEIGHT,
            "top": top,
            "pending": chart_points(
                samples, "pending", width=CHART_WIDTH, height=CHART_HEIGHT, top=top
            ),
            "dead": chart_points(samples, "dead", width=CHART_WIDTH, height=CHART_HEIGHT, top=top),
            "samples": len(samples),
        },
        history_chart=stored_backlog_chart(plane(request)),
        dead=[r.to_dict() for r in admin.peek(engine, where="dead", limit=50)],
        pending=[r.to_dict() for r in admin.peek(engine, where="pending", limit=20)],
        message=notice(request),
    )


@pages.post("/outbox/retry")
def retry_form(
    request: Request,
    event_id: Annotated[str, Form(max_length=64)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        body = RetryBody(
            ids=list(admin.ids_from_strings([event_id])) if event_id else [],
            everything=not event_id,
            reason="dashboard",
        )
    except ValueError as exc:
        raise invalid("event_id", str(exc)) from exc
    count = _retry(request, body, session.actor)
    return notice_redirect(request, "/outbox", f"retried {count}")


@pages.post("/outbox/purge")
def purge_form(
    request: Request,
    expected: Annotated[int, Form(ge=0, le=MAX_PURGE)] = 0,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        count = _purge(request, PurgeBody(expected=expected, reason="dashboard"), session.actor)
    except admin.PurgeMismatchError as exc:
        return notice_redirect(request, "/outbox", str(exc))
    return notice_redirect(request, "/outbox", f"purged {count}")
