"""Access log and HTTP metrics middleware (pure ASGI, one wrapper for both)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from safeship.observe import metrics
from safeship.observe.logging import get_logger, has_bound_context, request_id
from safeship.observe.rendering import JsonLineRenderer
from safeship.web._asgi import ASGIApp, Message, PathPrefixes, Receive, Scope, Send

RouteLabel = Callable[[Mapping[str, Any], int], str]

_ACCESS_LOGGER = "safeship.access"
_access_log = get_logger(_ACCESS_LOGGER)


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
        sink = _access_log.json_line_sink(level)
        if sink is None and not _access_log.is_enabled_for(level):
            return
        client = scope.get("client")
        address = client[0] if client else None
        duration_ms = int(duration * 1_000_000) / 1000  # µs precision; no round()
        if sink is not None and not _access_log.context and not has_bound_context():
            handler, renderer = sink
            method_name = _LEVEL_METHODS[level]
            handler.defer(
                _access_line,
                (renderer, method_name, request_id.get(), method, path, route, status,
                 duration_ms, address, time.time(), renderer.trace_fields(method_name)),
            )  # fmt: skip
            return
        fields = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "client": address,
        }
        _access_log.event(level, "http.request", fields)


_EVENT_KEYS, _EVENT_VALUES = ("event",), ("http.request",)
_REQUEST_KEYS = ("method", "path", "route")
_CLIENT_KEYS = ("client",)
_LEVEL_METHODS = {logging.DEBUG: "debug", logging.INFO: "info", logging.ERROR: "error"}


def _access_line(
    renderer: JsonLineRenderer,
    method_name: str,
    rid: str | None,
    method: str,
    path: str,
    route: str,
    status: int,
    duration_ms: float,
    client: str | None,
    now: float,
    trace: str,
) -> str:
    """The JSON line `Logger.event` renders for an access-log event with no bound context.

    The same text, field by field, in the same order (a test holds the two to it);
    without the event dict and the generic field loop, so it costs far less.
    """
    group = renderer.group
    request = ", " + renderer.unique_field("request_id", rid) if rid is not None else ""
    return (
        f"{{{group(_EVENT_KEYS, _EVENT_VALUES)}{request}"
        f", {group(_REQUEST_KEYS, (method, path, route))}, {renderer.field('status', status)}"
        f", {renderer.unique_field('duration_ms', duration_ms)}"
        f", {group(_CLIENT_KEYS, (client,))}"
        f", {renderer.level_and_logger(method_name, _ACCESS_LOGGER)}"
        f", {renderer.timestamp(now)}{trace}}}"
    )


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
