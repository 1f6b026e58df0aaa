"""Prometheus metrics of safeship and the exposition endpoint helper.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` base units) and
every label is bounded: routes are templates (``/orders/{id}``), never raw paths.
With ``PROMETHEUS_MULTIPROC_DIR`` set before start-up, values live in per-process files
and `render_latest` sums them, so several gunicorn/uvicorn workers report one total.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from safeship.errors import SafeshipError
from safeship.observe._http_metrics import KNOWN_METHODS, ProcessHttpMetrics, SharedHttpMetrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Media type of health answers (draft-inadarei-api-health-check).
HEALTH_JSON = "application/health+json"


class MetricsConfigError(SafeshipError, ValueError):
    """A metrics setting or dashboard name safeship cannot use; the message says which."""


#: Latency buckets in seconds, from 5 ms to 10 s.
HTTP_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: Label used when no route template matched (404s, unknown paths).
UNMATCHED_ROUTE = "unmatched"
#: Label used when the framework exposes no route template at all.
UNKNOWN_ROUTE = "other"

LOG_ALERTS = Counter(
    "safeship_log_alerts_total",
    "Log events at ALERT level (conditions an operator must act on), by logger.",
    ["logger"],
)
AUTH_FAILURES = Counter(
    "safeship_http_auth_failures_total",
    "Rejected API-key attempts, by reason (missing, invalid, limited, blocked).",
    ["reason"],
)


def multiprocess_enabled() -> bool:
    """Whether metrics are aggregated across processes (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get(MULTIPROC_ENV))


#: The HTTP request metrics the middleware records (see `safeship.observe._http_metrics`).
HTTP: ProcessHttpMetrics | SharedHttpMetrics
if multiprocess_enabled():
    HTTP = SharedHttpMetrics(HTTP_BUCKETS)
else:
    HTTP = ProcessHttpMetrics(HTTP_BUCKETS)
    REGISTRY.register(HTTP)


def render_latest(
    registry: CollectorRegistry | None = None, *, also: Sequence[Collector] = ()
) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` of the text exposition format.

    In multiprocess mode a fresh registry collects the files of every worker; otherwise
    ``registry`` (default: the global one) is rendered. The ``also`` collectors (such as
    the control plane's database readings) are added; a family they produce replaces
    the registry's family of the same name, so one exposition never names a metric twice.
    """
    if registry is None and multiprocess_enabled():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    source = registry or REGISTRY
    if also:
        merged = CollectorRegistry()
        merged.register(_Merged(source, also))
        source = merged
    return generate_latest(source), CONTENT_TYPE_LATEST


class _Merged(Collector):
    """The families of ``base``, minus those the ``extra`` collectors produce, plus theirs."""

    def __init__(self, base: CollectorRegistry, extra: Sequence[Collector]) -> None:
        self.base = base
        self.extra = extra

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        added = [family for collector in self.extra for family in collector.collect()]
        names = {family.name for family in added}
        yield from (family for family in self.base.collect() if family.name not in names)
        yield from added


def mark_process_dead(pid: int) -> None:
    """Tell multiprocess mode a worker exited (call from gunicorn's ``child_exit`` hook)."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def method_label(method: str) -> str:
    """Bound the method label: unknown verbs collapse into ``OTHER``."""
    return method if method in KNOWN_METHODS else "OTHER"


def route_label(scope: Mapping[str, Any], status: int) -> str:
    """The route template of a handled request, never its raw path.

    Uses ``scope["safeship.route"]`` (set by safeship's own endpoints), then the
    Starlette/FastAPI matched route's ``path`` (prefixed by any Mount), else a fixed
    fallback: ``unmatched`` for 404/405, ``other`` otherwise.
    """
    own = scope.get("safeship.route")
    if isinstance(own, str):
        return own
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return _mount_prefix(scope) + template if scope.get("root_path") else template
    return UNMATCHED_ROUTE if status in (404, 405) else UNKNOWN_ROUTE


def _mount_prefix(scope: Mapping[str, Any]) -> str:
    """The part of ``root_path`` added by Starlette Mounts (the app's own root excluded)."""
    root = scope.get("root_path", "")
    if not root:
        return ""
    app_root = scope.get("app_root_path", root)
    if isinstance(root, str) and isinstance(app_root, str) and root.startswith(app_root):
        return root[len(app_root) :]
    return ""


def observe_request(method: str, route: str, status: int, duration: float) -> None:
    """Record one finished HTTP request."""
    HTTP.observe(method, route, status, duration)


#: The shipped Grafana dashboards by topic; each is ``grafana/<file>`` in this package.
DASHBOARDS: Mapping[str, str] = {
    "http": "safeship.json",
    "flags": "flags.json",
    "rollouts": "rollouts.json",
    "outbox": "outbox.json",
    "breakers": "breakers.json",
    "database": "database.json",
}


def grafana_dashboard(topic: str = "http") -> dict[str, Any]:
    """A shipped Grafana dashboard (import it in Grafana, pick the Prometheus source):
    ``http`` (the default), ``flags``, ``rollouts``, ``outbox``, ``breakers`` or ``database``."""
    file = DASHBOARDS.get(topic)
    if file is None:
        raise MetricsConfigError(
            f"topic: unknown dashboard {topic!r}; known: {', '.join(DASHBOARDS)}"
        )
    text = resources.files("safeship.observe").joinpath(f"grafana/{file}").read_text()
    dashboard: dict[str, Any] = json.loads(text)
    return dashboard


def grafana_dashboards() -> dict[str, dict[str, Any]]:
    """Every shipped Grafana dashboard, by topic."""
    return {topic: grafana_dashboard(topic) for topic in DASHBOARDS}


class MetricsServer:
    """A small HTTP server in a daemon thread for processes without a web app (relays,
    workers): ``GET /metrics`` (this process's metrics and the ``also`` collectors) and
    ``GET /health`` (200 while ``health()`` says pass, else 503). Stop it with `close`."""

    def __init__(
        self,
        *,
        port: int,
        host: str = "127.0.0.1",
        health: Callable[[], tuple[bool, str]] | None = None,
        also: Sequence[Collector] = (),
    ) -> None:
        if not 0 <= port <= 65535:
            raise MetricsConfigError(f"port: a TCP port 0-65535 (0 picks a free one), got {port}")
        handler = _handler(health or (lambda: (True, "up")), tuple(also))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="safeship-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(
    health: Callable[[], tuple[bool, str]], also: Sequence[Collector]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = render_latest(also=also)
                self._answer(200, body, content_type)
            elif path == "/health":
                ok, output = health()
                status = {"status": "pass" if ok else "fail", "output": output}
                self._answer(200 if ok else 503, json.dumps(status).encode(), HEALTH_JSON)
            else:
                self._answer(404, b"not found: /metrics or /health\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged (one line every 15 s per scraper says nothing)."""

    return Handler
