"""Request body size limit and request timeout (pure ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
import math

from safeship.observe.logging import get_logger
from safeship.web._asgi import ASGIApp, Message, Receive, Scope, Send, header, send_problem

_log = get_logger("safeship.web.limits")


class _BodyTooLargeError(Exception):
    """Raised from ``receive`` once the body passed the limit."""


class BodySizeLimitMiddleware:
    """Answer 413 to request bodies larger than ``max_body_bytes``.

    A ``Content-Length`` over the limit is refused before the app runs; a streamed body
    is counted while the app reads it and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = 1_048_576) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _declared_too_large(self, scope: Scope) -> bool:
        raw = header(scope, b"content-length")
        if raw is None:
            return False
        try:
            return int(raw) > self.max_body_bytes
        except ValueError:
            return False  # the server rejects malformed lengths itself

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._declared_too_large(scope):
            await self._refuse(send)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's error response is replaced by our 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_problem(
            send,
            413,
            "Content Too Large",
            f"the request body exceeds {self.max_body_bytes} bytes",
            headers=[(b"connection", b"close")],
        )


class TimeoutMiddleware:
    """End requests that run longer than ``timeout`` seconds with 504.

    If the response already started, the request is cancelled and the connection closed
    by the server, since a status can no longer be sent.
    """

    def __init__(self, app: ASGIApp, *, timeout: float = 30.0) -> None:
        if not 0 < timeout < math.inf:
            raise ValueError("request timeout must be a positive number of seconds")
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own timeout, not ours
            _log.warning("http.timeout", path=scope.get("path"), timeout=self.timeout)
            if started:
                raise
            await send_problem(
                send, 504, "Gateway Timeout", f"the request took longer than {self.timeout:g}s"
            )
