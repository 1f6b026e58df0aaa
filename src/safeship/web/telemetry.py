"""Access log and HTTP metrics middleware (pure ASGI, one wrapper for both)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from safeship.observe import metrics
from safeship.observe.logging import get_logger, has_bound_context, request_id
from safeship.observe.rendering import JsonLineRenderer
from safeship.web._asgi import ASGIApp, Message, PathPrefixes, Receive, Scope, Send

RouteLabel = Callable[[Mapping[str, Any], int], str]

_ACCESS_LOGGER = "safeship.access"
_access_log = get_logger(_ACCESS_LOGGER)
#: The default route label: the matched route template (``metrics.route_label``).
_route_template: RouteLabel = metrics.route_label
_perf_counter = time.perf_counter
#: Trace ids exist only once something imported OpenTelemetry's API.
_OTEL_TRACE = "opentelemetry.trace"


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

    def finish(
        self,
        scope: Scope,
        status: int,
        duration: float,
        begun: object = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """A request ended with ``status``: record its metrics and access-log line.

        ``begun`` is what `begin` returned; ``loop`` the running event loop, when the
        caller knows it.
        """
        route_label = self.route_label
        route = None
        if route_label is _route_template and "safeship.route" not in scope:
            # The matched route's template, read inline when no Mount prefixes it.
            template = getattr(scope.get("route"), "path", None)
            if type(template) is str and not scope.get("root_path"):
                route = template
        if route is None:
            route = route_label(scope, status)
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
        sink = _access_log.json_line_sink(level)
        if sink is None and not _access_log.is_enabled_for(level):
            return
        client = scope.get("client")
        address = client[0] if client else None
        duration_ms = int(duration * 1_000_000) / 1000  # µs precision; no round()
        if sink is not None and not has_bound_context():
            handler, renderer = sink
            method_name = _LEVEL_METHODS[level]
            trace = renderer.trace_fields(method_name) if _OTEL_TRACE in sys.modules else ""
            lines = _lines
            if lines is None or lines.renderer is not renderer:
                lines = _lines_of(renderer)
            handler.defer(
                lines.line,
                (method_name, request_id.get(), method, path, route, status, duration_ms,
                 address, time.time(), trace),
                loop,
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
_STATUS_TEXTS_MAX = 1024


class _AccessLines:
    """Access-log lines of one `JsonLineRenderer`: the same text `Logger.event` renders
    for an access event with no bound context, field by field and in the same order (a
    test holds the two to it), from texts prepared once per renderer.

    `line` looks each field up instead of calling the renderer: it runs for every
    request, so it costs a few dictionary lookups and one f-string; a field it holds no
    text for comes from the renderer's own methods.
    """

    __slots__ = (
        "clients", "duration", "head", "renderer", "request_id", "requests", "stamp",
        "statuses", "tails",
    )  # fmt: skip

    def __init__(self, renderer: JsonLineRenderer) -> None:
        self.renderer = renderer
        # Masking is deterministic: a constant field renders the same every time.
        self.head = "{" + renderer.group(_EVENT_KEYS, _EVENT_VALUES)
        self.tails = {
            name: renderer.level_and_logger(name, _ACCESS_LOGGER)
            for name in _LEVEL_METHODS.values()
        }
        self.requests = renderer.kept_groups(_REQUEST_KEYS)
        self.clients = renderer.kept_groups(_CLIENT_KEYS)
        self.request_id = renderer.letters_prefix("request_id")
        self.duration = renderer.number_prefix("duration_ms")
        self.statuses: dict[int, str] = {}
        self.stamp: tuple[int, str] = (-1, "")  # a second, its timestamp up to the µs

    def line(
        self,
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
        """The line of one request (``duration_ms`` a finite float, ``status`` an int)."""
        renderer = self.renderer
        if rid is None:
            request = ""
        elif self.request_id is not None and type(rid) is str and rid.isalpha() and rid.isascii():
            request = ", " + self.request_id + rid + '"'  # generated ids: letters only
        else:
            request = ", " + renderer.unique_field("request_id", rid)
        fields = self.requests.get((method, path, route))
        if fields is None:
            fields = renderer.group(_REQUEST_KEYS, (method, path, route))
        status_text = self.statuses.get(status)
        if status_text is None:
            status_text = renderer.field("status", status)
            if len(self.statuses) < _STATUS_TEXTS_MAX:
                self.statuses[status] = status_text
        if self.duration is not None:
            duration = self.duration + repr(duration_ms)
        else:
            duration = renderer.unique_field("duration_ms", duration_ms)
        address = self.clients.get((client,))
        if address is None:
            address = renderer.group(_CLIENT_KEYS, (client,))
        tail = self.tails.get(method_name)
        if tail is None:
            tail = renderer.level_and_logger(method_name, _ACCESS_LOGGER)
        second = int(now)
        stamp = self.stamp
        if stamp[0] != second:
            stamp = self.stamp = (second, renderer.timestamp(second)[:-8])
        return (
            f"{self.head}{request}, {fields}, {status_text}, {duration}, {address}, {tail}"
            f', {stamp[1]}{int((now - second) * 1_000_000):06d}Z"{trace}}}'
        )


_lines: _AccessLines | None = None


def _lines_of(renderer: JsonLineRenderer) -> _AccessLines:
    """The `_AccessLines` of ``renderer`` (kept for the renderer last used)."""
    global _lines  # one slot: logging has one configuration at a time
    lines = _lines
    if lines is None or lines.renderer is not renderer:
        lines = _lines = _AccessLines(renderer)
    return lines


class AccessLogMiddleware(ObserveMiddleware):
    """Only the access log of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=True, metrics=False, **kwargs)


class MetricsMiddleware(ObserveMiddleware):
    """Only the HTTP metrics of `ObserveMiddleware`."""

    def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(app, access_log=False, metrics=True, **kwargs)
