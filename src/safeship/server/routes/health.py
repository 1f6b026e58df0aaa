"""Liveness, readiness and Prometheus metrics: unauthenticated, as probes expect."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from safeship.observe._metrics import render_latest
from safeship.observe.health import HEALTH_MEDIA_TYPE
from safeship.server.state import plane

router = APIRouter(tags=["health"])


async def _report(request: Request, kind: str) -> JSONResponse:
    report = await plane(request).health.run(kind)
    return JSONResponse(
        report.to_dict(),
        status_code=report.http_status,
        media_type=HEALTH_MEDIA_TYPE,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/health", summary="Liveness: the process is up")
async def liveness(request: Request) -> JSONResponse:
    return await _report(request, "liveness")


@router.get(
    "/health/ready",
    summary="Readiness: dependencies answer",
    responses={503: {"description": "a critical dependency fails"}},
)
async def readiness(request: Request) -> JSONResponse:
    return await _report(request, "readiness")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """This process's metrics and the figures stored in the database, read now."""
    stored = getattr(request.app.state, "scrape", None)
    body, content_type = render_latest(also=[stored] if stored is not None else [])
    return Response(body, media_type=content_type)
