"""Request body size limit and request timeout (pure ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Mapping
from typing import Any

from safeship.errors import SafeshipError
from safeship.observe._logging import get_logger
from safeship.web._asgi import ASGIApp, Message, Receive, Scope, Send, send_problem

_log = get_logger("safeship.web.limits")


class _BodyTooLargeError(Exception):
    """Raised from ``receive`` once the body passed the limit."""


class BodyLimitError(SafeshipError, ValueError):
    """A body size limit is not a whole number of bytes >= 0."""


class BodySizeLimitMiddleware:
    """Answer 413 to request bodies larger than ``max_body_bytes``.

    A ``Content-Length`` over the limit is refused before the app runs (nothing of the
    body is read); a streamed body is counted while the app reads it and cut off at the
    limit. ``path_limits`` gives chosen paths (exact request paths, such as a bulk import)
    a limit of their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = 1_048_576,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        limits = dict(path_limits or {})
        for name, value in (("max_body_bytes", max_body_bytes), *limits.items()):
            if type(value) is not int or value < 0:
                raise BodyLimitError(
                    f"body limit {name!r} must be a whole number of bytes >= 0, got {value!r}"
                )
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = limits

    def limit_for(self, scope: Scope) -> int:
        """The body limit of this request's path."""
        limits = self.path_limits
        if limits:
            return limits.get(scope.get("path", ""), self.max_body_bytes)
        return self.max_body_bytes

    def _declared_size(self, scope: Scope) -> tuple[int | None, bool]:
        """The ``Content-Length`` (None if absent or malformed), and whether the body is
        chunked (``Transfer-Encoding``)."""
        length: int | None = None
        chunked = False
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and length is None:
                try:
                    length = int(value)
                except ValueError:
                    chunked = True  # the server rejects malformed lengths; stay guarded
            elif key == b"transfer-encoding":
                chunked = True
        return length, chunked

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes to the app unguarded: its declared size is within the
        limit and HTTP/1 framing bounds the body, so there is nothing to count."""
        if scope["type"] != "http":
            return True
        length, chunked = self._declared_size(scope)
        if length is not None and length > self.limit_for(scope):
            return False
        # HTTP/1 framing: the body is exactly Content-Length bytes (none without it),
        # and the server reads no further, so there is nothing left to count.
        return not chunked and scope.get("http_version") in ("1.0", "1.1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.passes(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length, _ = self._declared_size(scope)
        if length is not None and length > limit:
            await self._refuse(send, limit)
            return
        await self._guarded(scope, receive, send, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
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
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        await send_problem(
            send,
            413,
            "Content Too Large",
            f"the request body exceeds {limit} bytes",
            headers=[(b"connection", b"close")],
        )


class _Deadlines:
    """In-flight requests of one event loop, grouped by when they expire.

    Deadlines are rounded up to ``resolution``, so one timer serves every request that
    expires in the same slot: a set insert per request instead of a timer each.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float) -> None:
        self.loop = loop
        self.clock = loop.time
        self.resolution = resolution
        self.slots: dict[int, set[asyncio.Task[Any]]] = {}
        self.expired: set[asyncio.Task[Any]] = set()

    def enter(self, task: asyncio.Task[Any], timeout: float) -> set[asyncio.Task[Any]]:
        """Watch ``task`` for ``timeout`` seconds; discard it from the returned set when done."""
        slot = math.ceil((self.clock() + timeout) / self.resolution)
        tasks = self.slots.get(slot)
        if tasks is None:
            tasks = self.slots[slot] = set()
            self.loop.call_at(slot * self.resolution, self._expire, slot)
        tasks.add(task)
        return tasks

    def _expire(self, slot: int) -> None:
        for task in self.slots.pop(slot, ()):
            self.expired.add(task)
            task.cancel()


#: What `TimeoutMiddleware.watch` returns: the loop's deadlines, the slot, the task's
#: cancellation count when it started.
Watch = tuple[_Deadlines, set[asyncio.Task[Any]], int]


class TimeoutMiddleware:
    """End requests that run longer than ``timeout`` seconds with 504.

    Requests are ended within ``timeout`` plus 5% of it (at most 0.25 s later). If the
    response already started, the request is cancelled and the connection closed by the
    server, since a status can no longer be sent.
    """

    def __init__(self, app: ASGIApp, *, timeout: float = 30.0) -> None:
        if not 0 < timeout < math.inf:
            raise ValueError("request timeout must be a positive number of seconds")
        self.app = app
        self.timeout = timeout
        self._resolution = min(timeout / 20, 0.25)
        self._deadlines: _Deadlines | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop) if scope["type"] == "http" else None
        if task is None:  # not HTTP, or not run as an asyncio task: nothing to cancel
            await self.app(scope, receive, send)
            return
        started = False

        def tracking_send(message: Message) -> Awaitable[None]:
            # A plain function returning the server's awaitable: no coroutine of its own.
            nonlocal started
            started = started or message["type"] == "http.response.start"
            return send(message)

        watch = self.watch(task, loop)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.is_own_timeout(task, watch):
                raise
            await self.timed_out(scope, send, started)
        finally:
            self.release(task, watch)

    def watch(
        self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> Watch:
        """Start the clock on ``task`` (running on ``loop``, when the caller knows it);
        pass the result to `is_own_timeout` and `release`."""
        if loop is None:
            loop = task.get_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = _Deadlines(loop, self._resolution)
        return deadlines, deadlines.enter(task, self.timeout), task.cancelling()

    def is_own_timeout(self, task: asyncio.Task[Any], watch: Watch) -> bool:
        """On CancelledError: whether it is this timeout's (then the task is uncancelled)."""
        expired = watch[0].expired
        # Like asyncio.timeout: only our own cancellation becomes a timeout.
        if task not in expired:
            return False
        expired.discard(task)
        return task.uncancel() <= watch[2]  # cancelled from elsewhere too: that one wins

    def release(self, task: asyncio.Task[Any], watch: Watch) -> None:
        """Stop watching ``task`` (in ``finally``)."""
        watch[1].discard(task)
        expired = watch[0].expired
        if expired and task in expired:  # expired, but the app swallowed the cancel
            expired.discard(task)
            task.uncancel()

    async def timed_out(self, scope: Scope, send: Send, started: bool) -> None:
        """Answer 504, or end a response already started with an error."""
        _log.warning("http.timeout", path=scope.get("path"), timeout=self.timeout)
        if started:
            raise TimeoutError(f"the request took longer than {self.timeout:g}s")
        await send_problem(
            send, 504, "Gateway Timeout", f"the request took longer than {self.timeout:g}s"
        )
