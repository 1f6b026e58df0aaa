"""The control plane's last word on an exception no handler answered.

Without it the exception reaches the server, which logs the traceback after the request's
context is gone (so without its request id) and, under uvicorn's default logging, as plain
text. Here it is logged inside the request (``server.unhandled_error``: one masked JSON line
with the request id, method and path) and answered with a JSON 500 naming that id.
"""

from __future__ import annotations

import json
import logging

from safeship.observe._logging import request_id
from safeship.web._asgi import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("safeship.server")


class UnhandledErrorMiddleware:
    """Log an unhandled exception with the request's id and answer 500 (when still possible)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            logger.exception(
                "server.unhandled_error",
                extra={"method": scope.get("method"), "path": scope.get("path")},
            )
            if not started:  # else the server closes the half-sent response
                await _internal_error(send)


async def _internal_error(send: Send) -> None:
    rid = request_id.get()
    body = json.dumps(
        {
            "error": "internal",
            "detail": "an internal error; the request id identifies it in the server's log",
            "request_id": rid,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
