"""Circuit breakers of every reporting process: the API and the dashboard page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, Field

from safeship.resilience.board import MODES, Mode
from safeship.server._notices import notice, notice_redirect
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.inputs import Body, Reason, clean_param
from safeship.server.routes.dashboard import admin_form_session, page_session, render
from safeship.server.state import plane

api = APIRouter(prefix="/api/v1/breakers", tags=["breakers"])
pages = APIRouter(include_in_schema=False)
Service = Annotated[str, Path(min_length=1, max_length=100), AfterValidator(clean_param)]
Name = Annotated[str, Path(min_length=1, max_length=200), AfterValidator(clean_param)]


class ModeBody(Body):
    mode: Mode = Field(description="forced_open, disabled, metrics_only, or automatic (reset)")
    reason: Reason = None


class ModeSet(BaseModel):
    service: str
    name: str
    mode: str
    version: int


def _rows(request: Request) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [b.to_dict(now) for b in plane(request).breakers.all()]


@api.get("", summary="Every breaker of every reporting process")
def list_breakers(request: Request, _: ReadPrincipal) -> list[dict[str, Any]]:
    return _rows(request)


@api.post(
    "/{service}/{name}/mode",
    response_model=ModeSet,
    summary="Force open, disable, metrics-only, or back to automatic (audited)",
)
def set_mode(
    request: Request, service: Service, name: Name, body: ModeBody, who: AdminPrincipal
) -> ModeSet:
    version = plane(request).breakers.set_mode(
        service, name, body.mode, actor=who.actor, reason=body.reason
    )
    return ModeSet(service=service, name=name, mode=body.mode, version=version)


@pages.get("/breakers")
def breakers_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    return render(
        request,
        "breakers.html",
        breakers=_rows(request),
        modes=MODES,
        message=notice(request),
    )


@pages.post("/breakers/{service}/{name}/mode")
def set_mode_form(
    request: Request,
    service: str,
    name: str,
    mode: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    if mode not in MODES:
        raise HTTPException(422, f"mode must be one of {', '.join(MODES)}")
    plane(request).breakers.set_mode(
        service,
        name,
        mode,
        actor=session.actor,
        reason="dashboard",
    )
    return notice_redirect(request, "/breakers", f"{name}: {mode}")
