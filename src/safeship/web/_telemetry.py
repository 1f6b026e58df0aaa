"""Access log and HTTP metrics middleware (pure ASGI, one wrapper for both)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from safeship.observe import _metrics as metrics
from safeship.observe._logging import get_logger
from safeship.web._asgi import ASGIApp, Message, PathPrefixes, Receive, Scope, Send

RouteLabel = Callable[[Mapping[str, Any], int], str]

_ACCESS_LOGGER = "safeship.access"
#: The default route label: the matched route template (``metrics.route_label``).
_route_template: RouteLabel = metrics.route_label
_access_log = get_logger(_ACCESS_LOGGER)
_perf_counter = time.perf_counter


#: The ASGI servers' own access loggers: safeship's ``http.request`` line replaces them.
SERVER_ACCESS_LOGGERS = ("uvicorn.access",)


def silence_server_access_logs() -> None:
    """Switch the server's own access logger off, so a request has one access line.

    uvicorn's ``--no-access-log`` alone is not enough: `configure_logging` (which
    ``protect()`` runs when the app is imported, after uvicorn set its loggers up) makes
    every uvicorn logger propagate again. A disabled logger stays off whatever later
    configuration does, and uvicorn then skips formatting its line.
    """
    for name in SERVER_ACCESS_LOGGERS:
        server_log = logging.getLogger(name)
        server_log.handlers.clear()
        server_log.propagate = False
        server_log.disabled = True


class ObserveMiddleware:
    """Record every HTTP request: one access-log event and the ``safeship_http_*`` metrics.

    Requests under ``quiet_paths`` (probes, scrapes) are logged at DEBUG. The route label
    comes from ``route_label`` (default: the matched route template, bounded fallback).
    With ``access_log`` on, the server's own access logger (``uvicorn.access``) is switched
    off (`silence_server_access_logs`): one access line per request, safeship's.
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
        if access_log:
            silence_server_access_logs()
        self.quiet_paths = tuple(quiet_paths)
        quiet = PathPrefixes(self.quiet_paths).parts
        self._quiet_all, self._quiet_bases, self._quiet_starts = quiet
        self.route_label: RouteLabel = route_label or _route_template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        def send_observed(message: Message) -> Awaitable[None]:
            # A plain function returning the server's awaitable: no coroutine of its own.
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            return send(message)

        begun = self.begin()
        started = _perf_counter()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.finish(scope, status, _perf_counter() - started, begun)

    def begin(self) -> object:
        """A request starts (counted in progress); pass the result on to `finish`."""
        return metrics.HTTP.started() if self.metrics else None

    def finish(self, scope: Scope, status: int, duration: float, begun: object = None) -> None:
        """A request ended with ``status``: record its metrics and access-log line
        (``begun`` is what `begin` returned)."""
        route = self.route_label(scope, status)
        method = scope.get("method", "GET")
        if type(method) is not str:
            method = str(method)
        if self.metrics:
            metrics.HTTP.finished(method, route, status, duration, begun)
        if not self.access_log:
            return
        path = scope.get("path", "")
        if type(path) is not str:
            path = str(path)
        if status >= 500:
            level = logging.ERROR
        elif self._quiet_all or path in self._quiet_bases or path.startswith(self._quiet_starts):
            level = logging.DEBUG
        else:
            level = logging.INFO
        client = scope.get("client")  # the logger drops the event if level is off
        fields = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": int(duration * 1_000_000) / 1000,  # µs precision; no round()
            "client": client[0] if client else None,
        }
        _access_log.event(level, "http.request", fields)


class AccessLogMiddleware(ObserveMiddleware):
    """Only the access log of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=True, metrics=False, **kwargs)


class MetricsMiddleware(ObserveMiddleware):
    """Only the HTTP metrics of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=False, metrics=True, **kwargs)
