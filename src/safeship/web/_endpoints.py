"""Health probe and metrics endpoints served in front of the user's app."""

from __future__ import annotations

import json
from collections.abc import Mapping

from safeship.observe._metrics import render_latest
from safeship.observe.health import HEALTH_MEDIA_TYPE, KINDS, HealthRegistry
from safeship.web._asgi import ASGIApp, Receive, Scope, Send, send_response

DEFAULT_HEALTH_PATHS: Mapping[str, str] = {
    "liveness": "/livez",
    "readiness": "/readyz",
    "startup": "/startupz",
}
_NO_STORE = (b"cache-control", b"no-store")


class HealthEndpoints:
    """Answer ``GET``/``HEAD`` on the probe paths with an ``application/health+json`` report.

    Status 200 for pass and warn, 503 for fail. Other requests go to the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        registry: HealthRegistry,
        *,
        paths: Mapping[str, str] = DEFAULT_HEALTH_PATHS,
    ) -> None:
        unknown = set(paths) - KINDS
        if unknown:
            raise ValueError(f"unknown health kinds {sorted(unknown)}; use {sorted(KINDS)}")
        for path in paths.values():
            if not path.startswith("/"):
                raise ValueError(f"health path {path!r} must start with '/'")
        self.app = app
        self.registry = registry
        self.by_path = {path: kind for kind, path in paths.items()}

    def handles(self, scope: Scope) -> bool:
        """Whether this request is a probe this layer answers."""
        return (
            scope["type"] == "http"
            and scope.get("path", "") in self.by_path
            and scope.get("method") in ("GET", "HEAD")
        )

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes on to the app (it is no probe)."""
        return not self.handles(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.handles(scope):
            await self.app(scope, receive, send)
            return
        kind = self.by_path[scope["path"]]
        scope["safeship.route"] = scope["path"]
        report = await self.registry.run(kind)
        body = json.dumps(report.to_dict(), default=str).encode()
        await send_response(
            send,
            report.http_status,
            b"" if scope["method"] == "HEAD" else body,
            content_type=HEALTH_MEDIA_TYPE.encode(),
            headers=[_NO_STORE],
        )


class MetricsEndpoint:
    """Serve Prometheus metrics on ``GET path`` (multiprocess-aware); other requests pass."""

    def __init__(self, app: ASGIApp, *, path: str = "/metrics") -> None:
        if not path.startswith("/"):
            raise ValueError(f"metrics path {path!r} must start with '/'")
        self.app = app
        self.path = path

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes on to the app (it is not for the metrics path)."""
        return scope["type"] != "http" or scope.get("path") != self.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.passes(scope):
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed", headers=[(b"allow", b"GET")])
            return
        scope["safeship.route"] = self.path
        body, content_type = render_latest()
        await send_response(
            send, 200, body, content_type=content_type.encode(), headers=[_NO_STORE]
        )
