"""Access log and HTTP metrics middleware (pure ASGI, one wrapper for both)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from safeship.observe import metrics
from safeship.observe.logging import get_logger
from safeship.web._asgi import ASGIApp, Message, PathPrefixes, Receive, Scope, Send

RouteLabel = Callable[[Mapping[str, Any], int], str]

_access_log = get_logger("safeship.access")


class ObserveMiddleware:
    """Record every HTTP request: one access-log event and the ``safeship_http_*`` metrics.

    Requests under ``quiet_paths`` (probes, scrapes) are logged at DEBUG. The route label
    comes from ``route_label`` (default: the matched route template, bounded fallback).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool = True,
        metrics: bool = True,
        quiet_paths: Iterable[str] = ("/livez", "/readyz", "/startupz", "/metrics"),
        route_label: RouteLabel | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.metrics = metrics
        self.quiet_paths = tuple(quiet_paths)
        self._is_quiet = PathPrefixes(self.quiet_paths)
        self.route_label: RouteLabel = route_label or _default_route_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.begin()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.finish(scope, status, time.perf_counter() - started)

    def begin(self) -> None:
        """A request starts (counted in progress)."""
        if self.metrics:
            metrics.HTTP.started()

    def finish(self, scope: Scope, status: int, duration: float) -> None:
        """A request ended with ``status``: record its metrics and access-log line."""
        route = self.route_label(scope, status)
        method = str(scope.get("method", "GET"))
        if self.metrics:
            metrics.HTTP.finished(method, route, status, duration)
        if self.access_log:
            self._log(scope, method, route, status, duration)

    def _log(self, scope: Scope, method: str, route: str, status: int, duration: float) -> None:
        path = str(scope.get("path", ""))
        if status >= 500:
            level = logging.ERROR
        elif self._is_quiet(path):
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not _access_log.is_enabled_for(level):
            return
        client = scope.get("client")
        fields = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": int(duration * 1_000_000) / 1000,  # µs precision; no round()
            "client": client[0] if client else None,
        }
        _access_log.event(level, "http.request", fields)


def _default_route_label(scope: Mapping[str, Any], status: int) -> str:
    return metrics.route_label(scope, status)


class AccessLogMiddleware(ObserveMiddleware):
    """Only the access log of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=True, metrics=False, **kwargs)


class MetricsMiddleware(ObserveMiddleware):
    """Only the HTTP metrics of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=False, metrics=True, **kwargs)
