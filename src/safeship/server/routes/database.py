"""The database in the control plane: the doctor's report as JSON and as the Database page
(pool in use / idle / waiting, connection headroom, index scans and last use, slow queries)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from safeship.data import diagnose
from safeship.server.deps import ReadPrincipal
from safeship.server.routes.dashboard import page_session, render
from safeship.server.state import plane

api = APIRouter(prefix="/api/v1/database", tags=["database"])
pages = APIRouter(include_in_schema=False)


def _report(request: Request) -> Any:
    cp = plane(request)
    settings = cp.settings
    return diagnose(
        cp.engine,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


@api.get(
    "/doctor",
    summary="Pools, connection headroom and index health of the control plane's database",
    description="Read-only: unused (with the statistics reset time), invalid, duplicate and "
    "overlapping indexes, foreign keys without an index, dead-tuple bloat, sequences near "
    "their column's limit, and the slowest statements when pg_stat_statements is installed. "
    "On SQLite only the pool is reported.",
)
def get_doctor(request: Request, _: ReadPrincipal) -> dict[str, Any]:
    result: dict[str, Any] = _report(request).to_dict()
    return result


@pages.get("/database")
def database_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, "database.html", report=_report(request))
