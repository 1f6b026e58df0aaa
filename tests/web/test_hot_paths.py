"""The fast paths of the middleware behave exactly like the general ones: request timeout
slots, body size limit without a body to count, and prepared path prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.web import BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web._asgi import Message, PathPrefixes, Receive, Scope, Send


def http_scope(
    headers: list[tuple[bytes, bytes]] | None = None, http_version: str = "1.1"
) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/",
        "http_version": http_version,
        "headers": headers or [],
    }


class Recorder:
    """An ASGI ``send`` that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None


def body_receive(*chunks: bytes) -> Receive:
    pending = list(chunks)

    async def receive() -> Message:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    return receive


async def read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


# -- timeout ---------------------------------------------------------------------------


def sleeper(seconds: float) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    return app


async def test_timeout_answers_504_within_its_resolution() -> None:
    sent = Recorder()
    started = time.monotonic()
    await TimeoutMiddleware(sleeper(5), timeout=0.2)(http_scope(), body_receive(), sent)
    elapsed = time.monotonic() - started
    assert sent.status == 504
    assert 0.2 <= elapsed < 0.2 * 1.05 + 0.1  # the deadline plus 5% slot (and scheduling)


async def test_outside_cancellation_is_not_turned_into_a_504() -> None:
    sent = Recorder()
    middleware = TimeoutMiddleware(sleeper(5), timeout=10)
    task = asyncio.create_task(middleware(http_scope(), body_receive(), sent))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent.messages == []


async def test_timed_out_request_leaves_the_task_uncancelled() -> None:
    async def swallow_cancel(scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # ignores cancellation, answers
            await asyncio.sleep(5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for app, status in ((sleeper(5), 504), (swallow_cancel, 200)):
        sent = Recorder()
        await TimeoutMiddleware(app, timeout=0.05)(http_scope(), body_receive(), sent)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        assert sent.status == status


def test_timeout_middleware_serves_several_event_loops() -> None:
    middleware = TimeoutMiddleware(sleeper(5), timeout=0.05)
    for _ in range(2):
        sent = Recorder()
        asyncio.run(middleware(http_scope(), body_receive(), sent))
        assert sent.status == 504


async def test_fast_requests_keep_their_response() -> None:
    middleware = TimeoutMiddleware(sleeper(0), timeout=0.05)
    for _ in range(20):
        sent = Recorder()
        await middleware(http_scope(), body_receive(), sent)
        assert sent.status == 200
    await asyncio.sleep(0.1)  # every slot timer fires on finished requests: no effect
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


# -- body size limit -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "http_version", "chunks", "status"),
    [
        ([(b"content-length", b"4")], "1.1", [b"1234"], 200),
        ([], "1.1", [b""], 200),
        ([(b"content-length", b"9")], "1.1", [b"123456789"], 413),
        ([(b"transfer-encoding", b"chunked")], "1.1", [b"1234", b"56789"], 413),
        ([(b"content-length", b"bogus")], "1.1", [b"1234", b"56789"], 413),
        ([], "2", [b"1234", b"56789"], 413),  # no HTTP/1 framing: counted as it streams
        ([], "2", [b"1234"], 200),
    ],
)
async def test_body_limit_counts_only_what_framing_does_not_bound(
    headers: list[tuple[bytes, bytes]], http_version: str, chunks: list[bytes], status: int
) -> None:
    sent = Recorder()
    middleware = BodySizeLimitMiddleware(read_all, max_body_bytes=8)
    await middleware(http_scope(headers, http_version), body_receive(*chunks), sent)
    assert sent.status == status


# -- path prefixes ---------------------------------------------------------------------


def reference_path_matches(path: str, prefixes: list[str]) -> bool:
    """The segment-aware rule, written the slow and obvious way."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return True
    return False


segments = st.lists(st.sampled_from(["api", "admin", "a", "", "api2"]), max_size=3)
paths = segments.map(lambda parts: "/" + "/".join(parts))


@given(path=paths, prefixes=st.lists(st.one_of(paths, paths.map(lambda p: p + "/")), max_size=4))
def test_prepared_prefixes_match_like_the_plain_rule(path: str, prefixes: list[str]) -> None:
    assert PathPrefixes(prefixes)(path) == reference_path_matches(path, prefixes)
