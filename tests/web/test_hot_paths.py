"""The fast paths of the middleware behave exactly like the general ones: request timeout
slots, body size limit without a body to count, and prepared path prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.observe import _metrics as metrics
from safeship.observe._logging import request_id
from safeship.web import BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web._asgi import Message, PathPrefixes, Receive, Scope, Send
from safeship.web._request_id import RequestIdMiddleware
from safeship.web._telemetry import ObserveMiddleware


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


class _LateClockLoop(asyncio.SelectorEventLoop):
    """A loop whose clock runs an hour behind time.monotonic."""

    def time(self) -> float:
        return super().time() - 3600.0


def test_timeout_keeps_the_time_of_a_loop_with_a_clock_of_its_own() -> None:
    middleware = TimeoutMiddleware(sleeper(5), timeout=0.05)
    loop = _LateClockLoop()
    try:
        sent = Recorder()
        started = time.monotonic()
        loop.run_until_complete(middleware(http_scope(), body_receive(), sent))
        assert sent.status == 504 and time.monotonic() - started < 1.0
    finally:
        loop.close()


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


# -- protect's outer layers run as one -------------------------------------------------


async def _answers(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose behaviour the path picks: ok, a header of its own, failure, slowness."""
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/slow":
        await asyncio.sleep(5)
    if path == "/swallow":
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(5)
    headers = [(b"x-request-id", b"the-apps-own")] if path == "/own-id" else []
    rid = request_id.get() or ""
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": rid.encode()})


def _outer_layers() -> Any:
    """protect()'s outer layers, stacked as protect() stacks them."""
    ids = iter(f"id{n}" for n in range(1000))
    timeout = TimeoutMiddleware(_answers, timeout=0.05)
    observe = ObserveMiddleware(timeout, route_label=lambda scope, status: scope["path"])
    return RequestIdMiddleware(observe, generator=lambda: next(ids))


@pytest.mark.parametrize("path", ["/ok", "/own-id", "/boom", "/slow", "/swallow"])
async def test_the_outer_layers_tag_log_count_and_time_out(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    sent = Recorder()
    scope = {**http_scope([(b"x-request-id", b"given-1")]), "path": path}
    before = metrics.HTTP.snapshot()
    with caplog.at_level(logging.INFO, logger="safeship.access"), contextlib.suppress(RuntimeError):
        await _outer_layers()(scope, body_receive(), sent)
    lines = [
        (r.name, r.msg.get("status"), r.msg.get("request_id"))  # type: ignore[union-attr]
        for r in caplog.records
    ]
    counted = metrics.HTTP.snapshot() - before
    assert request_id.get() is None and counted and (sent.messages or path == "/boom")
    status = 500 if path == "/boom" else 504 if path == "/slow" else 201
    assert ("safeship.access", status, "given-1") in lines
    assert counted == {("POST", path, status): 1}
    if sent.messages:
        headers = dict(sent.messages[0]["headers"])
        assert headers[b"x-request-id"] == b"given-1"


def test_request_id_header_replaces_the_apps_own_in_any_case() -> None:
    from safeship.web._request_id import with_header

    given = [(b"a", b"1"), (b"X-Request-ID", b"old"), (b"b", b"2"), (b"x-request-id", b"o2")]
    assert with_header(given, b"x-request-id", b"new") == [
        (b"a", b"1"),
        (b"b", b"2"),
        (b"x-request-id", b"new"),
    ]
    assert with_header((), b"x-request-id", b"new") == [(b"x-request-id", b"new")]


def test_generated_request_ids_differ_in_a_forked_child() -> None:
    import os

    from safeship.web._request_id import _random_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, _random_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = _random_id()
    assert len(child) == len(parent) == 32 and child != parent


async def test_the_outer_layers_outside_a_task_still_tag_and_count() -> None:
    """Driven from a loop callback (no current task): no timeout, the rest still acts."""
    app = _outer_layers()
    sent = Recorder()
    scope = {**http_scope(), "path": "/ok"}
    before = metrics.HTTP.snapshot()
    done = asyncio.get_running_loop().create_future()

    def drive() -> None:
        assert asyncio.current_task() is None
        coroutine = app(scope, body_receive(), sent)
        with pytest.raises(StopIteration):  # nothing in this app suspends
            coroutine.send(None)
        done.set_result(None)

    asyncio.get_running_loop().call_soon(drive)
    await done
    assert sent.status == 201
    assert dict(sent.messages[0]["headers"])[b"x-request-id"].startswith(b"id")
    assert metrics.HTTP.snapshot()[("POST", "/ok", 201)] == before[("POST", "/ok", 201)] + 1
