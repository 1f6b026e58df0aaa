"""Dashboard pages for flags: the list with toggles and rollout sliders, one flag's history,
and the kill switch.  Writes need an admin session and the session's CSRF token; the edit
forms send the version of the flag the page showed, so an edit made on a page that is out
of date is refused (409) instead of overwriting a change made since.  A flag's page also
charts the evaluations Unleash SDKs reported for it (``POST /api/client/metrics``, stored
per minute in ``safeship_samples``) and lists the SDK instances seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from safeship.flags._authoring import FlagDefinitionError
from safeship.flags.store import FlagNotFoundError, FlagVersionError
from safeship.server import _charts as charts
from safeship.server import _samples
from safeship.server._notices import notice, notice_redirect
from safeship.server.routes.dashboard import admin_form_session, page_session, render
from safeship.server.routes.flags_api import flag_out
from safeship.server.sdk_clients import EVALUATION_BUCKET, SdkClientStore
from safeship.server.state import ControlPlane, plane

router = APIRouter(include_in_schema=False)
Csrf = Annotated[str, Form(max_length=200)]
ReasonField = Annotated[str, Form(max_length=2000)]
VersionField = Annotated[int | None, Form(ge=1, le=2**62)]
#: How far back the SDK evaluations chart reaches, and the SDK instances listed at most.
SDK_CHART_HISTORY = timedelta(hours=6)
SDK_INSTANCES_LISTED = 20


def sdk_evaluations_chart(cp: ControlPlane, name: str, now: datetime) -> dict[str, Any]:
    """Evaluations per minute the SDKs reported for ``name``: yes, no, then each variant.
    A minute with no report is a zero (SDKs report only what they evaluated)."""
    stored = _samples.read_series(cp.engine, since=now - SDK_CHART_HISTORY, kind="sdk",
                                  subject=name)  # fmt: skip
    order = {"yes": 0, "no": 1}
    stored.sort(key=lambda s: (order.get(s.metric, 2), s.metric))
    first = min((s.points[0][0] for s in stored if s.points), default=now - timedelta(hours=1))
    start = min(first, now - timedelta(minutes=5))
    step = timedelta(seconds=EVALUATION_BUCKET)
    lines = []
    for i, series in enumerate(stored[:6]):
        values = dict(series.points)
        at, filled = first, []
        while at <= now:
            filled.append((at, values.get(at, 0.0)))
            at += step
        label = series.metric.replace("variant:", "variant ", 1)
        lines.append(charts.Line(label, f"series-{i}", filled))
    return charts.line_chart(lines, start=start, end=now, unit="evaluations / minute")


def sdk_instances(request: Request) -> list[dict[str, Any]]:
    store: SdkClientStore = request.app.state.sdk_clients
    return store.newest(SDK_INSTANCES_LISTED)


@router.get("/flags")
def flags_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    flags = [flag_out(cp, r) for r in cp.flags.all()]
    killed = cp.flags.killed_at()
    return render(
        request,
        "flags.html",
        flags=flags,
        killed_at=killed,
        version=cp.flags.version(),
        message=notice(request),
    )


@router.get("/flags/{name}")
def flag_page(request: Request, name: str) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    try:
        record = cp.flags.get(name)
    except FlagNotFoundError:
        return render(request, "error.html", 404, message=f"No flag named {name!r}.")
    history = [h.to_dict() for h in cp.flags.history(name, limit=100)]
    return render(
        request,
        "flag.html",
        flag=flag_out(cp, record),
        history=history,
        sdk_chart=sdk_evaluations_chart(cp, name, datetime.now(UTC)),
        sdk_clients=sdk_instances(request),
    )


def _done(request: Request, message: str) -> Response:
    return notice_redirect(request, "/flags", message)


def _stale(request: Request, exc: FlagVersionError) -> Response:
    message = (
        f"{exc.name} changed since this page was loaded (now version {exc.current}); "
        "reload the page and try again."
    )
    return render(request, "error.html", 409, message=message)


@router.post("/flags/{name}/toggle")
def toggle(
    request: Request,
    name: str,
    csrf_token: Csrf = "",
    reason: ReasonField = "",
    version: VersionField = None,
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    cp = plane(request)
    try:
        record = cp.flags.get(name)
        cp.flags.set_enabled(
            name,
            not record.enabled,
            actor=session.actor,
            reason=reason or "dashboard toggle",
            expected_version=version,
        )
    except FlagNotFoundError:
        return render(request, "error.html", 404, message=f"No flag named {name!r}.")
    except FlagVersionError as exc:
        return _stale(request, exc)
    return _done(request, f"{name} turned {'off' if record.enabled else 'on'}")


@router.post("/flags/{name}/rollout")
def rollout(
    request: Request,
    name: str,
    percent: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Csrf = "",
    reason: ReasonField = "",
    version: VersionField = None,
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        plane(request).flags.rollout(
            name,
            percent,
            actor=session.actor,
            reason=reason or "dashboard rollout",
            expected_version=version,
        )
    except FlagNotFoundError:
        return render(request, "error.html", 404, message=f"No flag named {name!r}.")
    except FlagVersionError as exc:
        return _stale(request, exc)
    except FlagDefinitionError as exc:
        return render(request, "error.html", 422, message=str(exc))
    return _done(request, f"{name} rolled out to {percent}%")


@router.post("/flags-kill")
def kill(
    request: Request,
    csrf_token: Csrf = "",
    reason: ReasonField = "",
    confirm: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    if confirm != "KILL":
        return render(request, "error.html", 400, message="Type KILL to confirm the kill switch.")
    changed = plane(request).flags.kill(actor=session.actor, reason=reason or "dashboard")
    return _done(request, f"kill switch engaged: {len(changed)} flag(s) changed")


@router.post("/flags-restore")
def restore(request: Request, csrf_token: Csrf = "", reason: ReasonField = "") -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    try:
        restored = plane(request).flags.restore(actor=session.actor, reason=reason or "dashboard")
    except ValueError as exc:
        return render(request, "error.html", 409, message=str(exc))
    return _done(request, f"restored {len(restored)} flag(s)")
