"""Server-rendered dashboard: sign-in, sign-out and the page rendering every page shares
(navigation, session, CSRF token, the ``when`` filter for timestamps)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from safeship.server._when import when
from safeship.server.deps import authenticate_key, request_session
from safeship.server.session import COOKIE_NAME, Session, csrf_matches
from safeship.server.state import plane

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
templates.env.filters["when"] = when


def page_session(request: Request) -> Session | None:
    """The signed-in session of a dashboard request, or None."""
    return _session(request)


def admin_form_session(request: Request, csrf_token: str) -> Session | Response:
    """The admin session behind an unsafe form post, or the error page to answer with."""
    session = _session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    if not _same_origin(request) or not csrf_matches(session, csrf_token):
        return render(request, "error.html", 403, message="CSRF check failed; reload the page.")
    if session.scope != "admin":
        return render(request, "error.html", 403, message="This action needs an admin key.")
    return session


def _session(request: Request) -> Session | None:
    """The live session, checked against the database and the key's current scope."""
    return request_session(request)


def _same_origin(request: Request) -> bool:
    """Unsafe form posts must come from this origin (or a client that sends no Origin)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: object,
) -> Response:
    """Render a dashboard page with the navigation and the session's CSRF token."""
    cp = plane(request)
    session = _session(request)
    context.update(
        nav=cp.nav,
        session=session,
        environment=cp.settings.environment,
        current_path=request.url.path,
    )
    return templates.TemplateResponse(
        request,
        template,
        context,
        status_code=status_code,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return render(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, key: Annotated[str, Form(max_length=512)] = "") -> Response:
    cp = plane(request)
    # Async routes look the session up off the event loop (render reads it, kept by then).
    await run_in_threadpool(request_session, request)
    if not _same_origin(request):
        return render(request, "login.html", 403, error="Cross-site sign-in refused.")
    try:
        principal = await authenticate_key(request, key)
    except HTTPException as exc:
        return render(
            request, "login.html", exc.status_code, error=str(exc.detail), headers=exc.headers
        )
    if principal is None:
        return render(request, "login.html", 401, error="That key is not valid.")
    if not principal.can("read"):  # a frontend key reaches only /api/frontend
        return render(request, "login.html", 403, error="A frontend key cannot sign in.")
    try:
        cookie, _ = await run_in_threadpool(cp.sessions.issue, principal)
    except LookupError:  # the key was revoked between the check and the session
        return render(request, "login.html", 401, error="That key is not valid.")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=cp.sessions.max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Sign out: the session is deleted server-side, so a copy of the cookie is useless."""
    session = _session(request)
    if session is not None and not csrf_matches(session, csrf_token):
        return Response("CSRF token missing or wrong", status_code=403)
    if session is not None:
        plane(request).sessions.revoke(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response
