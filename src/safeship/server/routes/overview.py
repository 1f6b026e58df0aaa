"""The overview: one screen that says whether the migration is healthy, as a page and as
JSON (``GET /api/v1/overview``), and the stored samples behind its charts
(``GET /api/v1/samples``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from safeship.db._audit import list_audit
from safeship.server import _charts as charts
from safeship.server import _samples
from safeship.server._health_summary import Readings, summarize
from safeship.server._overview import gather, overview, read_caches
from safeship.server.deps import ReadPrincipal, request_session
from safeship.server.inputs import clean_param
from safeship.server.routes.dashboard import render
from safeship.server.state import ControlPlane, plane

api = APIRouter(prefix="/api/v1", tags=["overview"])
pages = APIRouter(include_in_schema=False)
_FAVICON = Path(__file__).resolve().parent.parent / "static" / "favicon.svg"
#: How far back the overview's charts look.
CHART_HISTORY = timedelta(hours=6)
#: The most rollouts and breakers drawn on the overview (the rest are in the tables).
MAX_CHARTED = 6
Subject = Annotated[str | None, Query(min_length=1, max_length=400), AfterValidator(clean_param)]


class SectionOut(BaseModel):
    status: Literal["pass", "warn", "fail"]
    findings: list[str] = Field(description="Why, in words.")


class OverviewOut(BaseModel):
    verdict: Literal["pass", "warn", "fail"] = Field(
        description="pass only when every section passes; otherwise the worst section."
    )
    generated_at: str
    sections: dict[str, SectionOut] = Field(
        description="flags, rollouts, breakers, outbox, alerts and database."
    )
    database: dict[str, Any]
    flags: list[dict[str, Any]] | None
    killed_at: str | None
    rollouts: list[dict[str, Any]] | None
    breakers: list[dict[str, Any]] | None
    outbox: dict[str, Any] | None
    alerts: list[dict[str, Any]] | None
    idempotency: dict[str, Any] | None = Field(
        default=None,
        description="Idempotency keys (in flight, unknown outcomes, completed in the last "
        "hour) when the SQL key store's table is in this database; then also a section.",
    )
    cache: list[dict[str, Any]] | None = Field(
        default=None,
        description="Per service and cache namespace, over the last hour, from the figures "
        "services report with safeship.cache.CacheReporter: hits, misses, hit_ratio, "
        "stale_served, errors, reporting instances. None when unreadable.",
    )


class PointOut(BaseModel):
    at: str
    value: float


class SeriesOut(BaseModel):
    kind: str
    subject: str
    metric: str
    points: list[PointOut]


class SamplesOut(BaseModel):
    since: str
    series: list[SeriesOut]


@api.get(
    "/overview",
    response_model=OverviewOut,
    summary="Is the migration healthy: every section judged, with the readings behind it",
)
def get_overview(request: Request, _: ReadPrincipal) -> dict[str, Any]:
    return overview(plane(request))


@api.get(
    "/samples",
    response_model=SamplesOut,
    summary="Stored chart history: outbox backlog, breaker states, rollout arms, job queues, "
    "cache figures, SDK-reported evaluations",
    description="The control plane samples every `interval` seconds into one row per "
    "series and time bucket (shared by every control-plane process), kept for a bounded "
    "retention (24 hours by default).",
)
def get_samples(
    request: Request,
    _: ReadPrincipal,
    kind: Literal["outbox", "breaker", "rollout", "jobs", "cache", "sdk"] | None = None,
    subject: Subject = None,
    hours: Annotated[int, Query(ge=1, le=720)] = 6,
) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(hours=hours)
    found = _samples.read_series(plane(request).engine, since=since, kind=kind, subject=subject)
    return {"since": since.isoformat(), "series": [s.to_dict() for s in found]}


@pages.get("/favicon.ico")
def favicon() -> Response:
    return FileResponse(_FAVICON, media_type="image/svg+xml")


def _line(series: dict[tuple[str, str, str], _samples.Series], key: tuple[str, str, str],
          label: str, css: str) -> charts.Line:  # fmt: skip
    found = series.get(key)
    return charts.Line(label, css, found.points if found else ())


def overview_charts(cp: ControlPlane, readings: Readings) -> dict[str, Any]:
    """The overview's charts from the stored samples of the last ``CHART_HISTORY``."""
    end = readings.now
    stored = _samples.read_series(
        cp.engine, since=end - CHART_HISTORY, kind=("outbox", "breaker", "rollout")
    )
    by_key = {(s.kind, s.subject, s.metric): s for s in stored}
    first = min((s.points[0][0] for s in stored if s.points), default=end - timedelta(hours=1))
    start = min(first, end - timedelta(minutes=5))

    def chart(lines: list[charts.Line], unit: str) -> dict[str, Any]:
        return charts.line_chart(lines, start=start, end=end, unit=unit)

    out: dict[str, Any] = {
        "backlog": chart(
            [
                _line(by_key, ("outbox", "", "pending"), "pending", "pending"),
                _line(by_key, ("outbox", "", "dead"), "dead letters", "dead"),
            ],
            "events",
        ),
        "breakers": chart(
            [
                charts.Line(s.subject, f"series-{i % 6}", s.points)
                for i, s in enumerate(x for x in stored if x.kind == "breaker")
                if i < MAX_CHARTED
            ],
            "state",
        ),
        "rollouts": [],
    }
    live = [r for r in readings.rollouts or () if r.status in ("running", "paused")]
    for r in live[:MAX_CHARTED]:
        lines = [
            _line(by_key, ("rollout", r.name, f"{arm}.error_rate"), arm, arm)
            for arm in ("control", "candidate")
        ]
        out["rollouts"].append({"name": r.name, "chart": chart(lines, "% errors")})
    return out


def stored_backlog_chart(cp: ControlPlane) -> dict[str, Any] | None:
    """The outbox page's history chart (pending and dead letters, stored samples)."""
    now = datetime.now(UTC)
    try:
        stored = _samples.read_series(cp.engine, since=now - CHART_HISTORY, kind="outbox")
    except Exception:  # noqa: BLE001 - no history is no reason to fail the page
        return None
    by_key = {(s.kind, s.subject, s.metric): s for s in stored}
    first = min((s.points[0][0] for s in stored if s.points), default=now - timedelta(hours=1))
    lines = [
        _line(by_key, ("outbox", "", "pending"), "pending", "pending"),
        _line(by_key, ("outbox", "", "dead"), "dead letters", "dead"),
    ]
    start = min(first, now - timedelta(minutes=5))
    return charts.line_chart(lines, start=start, end=now, unit="events")


def _cache_charts(caches: list[Any], ratios: dict[tuple[str, str], list[Any]],
                  end: datetime) -> list[dict[str, Any]]:  # fmt: skip
    """One hit-ratio chart (% per time bucket) per shown cache namespace."""
    out = []
    for c in caches[:MAX_CHARTED]:
        points = ratios.get((c.service, c.namespace), [])
        start = min([points[0][0]] if points else [], default=end - timedelta(hours=1))
        line = charts.Line("hit ratio", "series-0", tuple(points))
        chart = charts.line_chart([line], start=min(start, end - timedelta(minutes=5)),
                                  end=end, unit="% hits")  # fmt: skip
        out.append({"name": f"{c.service} / {c.namespace}", "chart": chart})
    return out


def _page_data(cp: ControlPlane) -> dict[str, Any]:
    """What the overview page renders besides the readiness checks."""
    readings = gather(cp)
    try:
        drawn = overview_charts(cp, readings)
    except Exception:  # noqa: BLE001 - the page must still show the verdict without history
        drawn = None
    caches, cache_charts = None, []
    if readings.database.reachable:
        try:
            caches, ratios = read_caches(cp, readings.now)
            cache_charts = _cache_charts(caches, ratios, readings.now)
        except Exception:  # noqa: BLE001 - an unreadable card must not fail the page
            caches = None
    try:
        with cp.engine.connect() as conn:
            audit = [r.to_dict() for r in list_audit(conn, limit=25)]
        audit_error = None
    except Exception:  # noqa: BLE001 - the page must still show health when the DB is down
        audit, audit_error = [], "The audit trail is unavailable: the database does not answer."
    return {
        "r": readings,
        "summary": summarize(readings),
        "charts": drawn,
        "audit": audit,
        "audit_error": audit_error,
        "caches": caches,
        "cache_charts": cache_charts,
    }


@pages.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    if await run_in_threadpool(request_session, request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    report = await cp.health.run("readiness")
    data = await run_in_threadpool(_page_data, cp)
    return render(request, "overview.html", health=report.to_dict(), **data)
