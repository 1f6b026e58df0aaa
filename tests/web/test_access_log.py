"""The access log's own line renderer and its batched writes give what logging would."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from safeship.observe import configure_logging, get_logger
from safeship.observe.logging import _EventDict, _formatter, bound_context, request_id
from safeship.observe.masking import MaskPattern, PiiMasker
from safeship.web import protect
from safeship.web._asgi import Receive, Scope, Send
from safeship.web.telemetry import _lines_of

FORMATTERS = {
    "masked": _formatter(True, PiiMasker(), False),
    "unmasked": _formatter(True, None, False),
    # a pattern of letters only: generated request ids must be searched too
    "letters": _formatter(
        True, PiiMasker(patterns=[MaskPattern("word", re.compile("b|GET"))]), False
    ),
    # every field of the access line but the event masked whole
    "sensitive": _formatter(
        True,
        PiiMasker(keys=["request_id", "duration_ms", "status", "client", "method", "path"]),
        False,
    ),
}
texts = st.text(alphabet='abc/{}@.+-() 0123456789Bearer\u00e9\n"\\', max_size=40)


@example(
    rid=None, method="GET", path="/users/jane@example.com", route="/users/{email}",
    status=200, duration_ms=0.001, client=None, method_name="info", formatter="masked",
)  # fmt: skip
@example(
    rid="abc", method="POST", path="/call/+44 20 7946 0958", route="overflow",
    status=503, duration_ms=12345.678, client="10.0.0.1", method_name="error",
    formatter="unmasked",
)  # fmt: skip
@settings(max_examples=200, deadline=None)
@given(
    rid=st.none()
    | st.text(alphabet="bcdfghjk0123456789-", min_size=1, max_size=40)
    | st.text(alphabet="bcdfghjkmnpqrstv", min_size=32, max_size=32)
    | st.integers(0, 10**6),  # an id the app set itself, of another type
    method=st.sampled_from(["GET", "POST", "DELETE", "PATCH"]) | texts,
    path=texts,
    route=texts,
    status=st.integers(100, 599),
    duration_ms=st.integers(0, 10**9).map(lambda us: us / 1000),
    client=st.none() | texts,
    method_name=st.sampled_from(["debug", "info", "error"]),
    formatter=st.sampled_from(sorted(FORMATTERS)),
)
def test_access_line_is_the_text_of_the_event_it_stands_for(
    rid: Any,
    method: str,
    path: str,
    route: str,
    status: int,
    duration_ms: float,
    client: str | None,
    method_name: str,
    formatter: str,
) -> None:
    renderer = FORMATTERS[formatter]._json_line  # type: ignore[attr-defined]
    event = _EventDict(event="http.request")
    if rid is not None:
        event["request_id"] = rid
    event.update(
        method=method, path=path, route=route, status=status, duration_ms=duration_ms,
        client=client,
    )  # fmt: skip
    now = 1_700_000_000.123456
    general = renderer(event, method_name, "safeship.access", now)
    for _ in range(2):  # the second time from cached fields
        ours = _lines_of(renderer).line(
            method_name, rid, method, path, route, status, duration_ms, client, now, ""
        )
        assert ours == general


async def pong(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"pong"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Any) -> None:
    pass


def scope(path: str = "/orders/7") -> Scope:
    return {
        "type": "http", "method": "GET", "path": path, "headers": [],
        "client": ("10.1.2.3", 5000),
    }  # fmt: skip


class CountingFile(io.TextIOWrapper):
    """A text file on disk that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        if text:
            self.writes += 1
        return super().write(text)


@pytest.fixture
def log_file(tmp_path: Path, restore_logging: None) -> Iterator[CountingFile]:
    stream = CountingFile(open(tmp_path / "log.jsonl", "wb"), encoding="utf-8")  # noqa: SIM115
    yield stream
    for handler in logging.getLogger().handlers:
        handler.close()  # writes its pending lines while the file is open
    stream.close()


def lines_of(stream: CountingFile) -> list[dict[str, Any]]:
    stream.flush()
    with open(stream.name) as written:
        return [json.loads(line) for line in written]


async def test_lines_of_one_loop_iteration_are_written_together_at_its_end(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    for _ in range(3):
        await app(scope(), receive, discard)
    assert log_file.writes == 0  # still this iteration: nothing written yet
    await asyncio.sleep(0)
    assert log_file.writes == 1
    lines = lines_of(log_file)
    assert [line["event"] for line in lines] == ["http.request"] * 3
    assert {line["path"] for line in lines} == {"/orders/7"}
    assert len({line["request_id"] for line in lines}) == 3


async def test_another_event_first_writes_the_pending_access_lines(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    await app(scope(), receive, discard)
    get_logger("app.orders").info("order.shipped", order_id=7)
    assert [line["event"] for line in lines_of(log_file)] == ["http.request", "order.shipped"]


async def test_flush_and_close_write_the_pending_lines(log_file: CountingFile) -> None:
    handler = configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    await app(scope(), receive, discard)
    handler.flush()
    assert [line["event"] for line in lines_of(log_file)] == ["http.request"]
    await app(scope("/orders/8"), receive, discard)
    handler.close()
    assert [line["path"] for line in lines_of(log_file)] == ["/orders/7", "/orders/8"]


async def test_without_batching_each_line_is_written_as_its_request_ends(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file, batch_access_log=False)
    app = protect(pong, metrics_path=None)
    await app(scope(), receive, discard)
    assert log_file.writes == 1
    assert lines_of(log_file)[0]["event"] == "http.request"


@pytest.mark.usefixtures("restore_logging")
async def test_an_in_memory_stream_gets_each_line_at_once() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    await protect(pong, metrics_path=None)(scope(), receive, discard)
    assert json.loads(stream.getvalue())["event"] == "http.request"


async def test_bound_context_and_another_handler_take_the_general_path(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    with bound_context(tenant="acme"):
        await app(scope(), receive, discard)
    assert lines_of(log_file)[0]["tenant"] == "acme"  # written at once, context included

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        await app(scope("/orders/9"), receive, discard)
    finally:
        logging.getLogger().removeHandler(keep)
    assert [r.msg["path"] for r in seen] == ["/orders/9"]  # type: ignore[index]
    assert [line["path"] for line in lines_of(log_file)] == ["/orders/7", "/orders/9"]


async def test_batched_lines_keep_the_time_and_request_id_of_their_request(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    await app(scope(), receive, discard)
    assert request_id.get() is None
    await asyncio.sleep(0.05)
    await app(scope(), receive, discard)
    await asyncio.sleep(0)
    first, second = lines_of(log_file)
    assert first["timestamp"] < second["timestamp"]
    assert first["request_id"] != second["request_id"]


def test_lines_pending_at_exit_are_written_by_logging_shutdown(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    out = tmp_path / "out.jsonl"
    script.write_text(
        "import asyncio, logging, sys\n"
        "from safeship.observe import configure_logging\n"
        "from safeship.web import protect\n"
        "configure_logging(fmt='json', stream=open(sys.argv[1], 'w'))\n"
        "async def pong(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'pong'})\n"
        "async def main():\n"
        "    async def receive():\n"
        "        return {'type': 'http.request', 'body': b''}\n"
        "    async def send(message):\n"
        "        pass\n"
        "    app = protect(pong, metrics_path=None)\n"
        "    scope = {'type': 'http', 'method': 'GET', 'path': '/x', 'headers': []}\n"
        "    await app(scope, receive, send)\n"
        "    asyncio.get_running_loop().stop()  # the loop ends before its next iteration\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.create_task(main())\n"
        "loop.run_forever()\n"
    )
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, str(script), str(out)], check=True, env=env, timeout=60)
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == ["/x"]


def test_a_stopped_loop_does_not_hold_back_the_lines_of_another(log_file: CountingFile) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)

    async def request_then_stop() -> None:
        await app(scope("/a"), receive, discard)
        asyncio.get_running_loop().stop()  # before the iteration that would write "/a"

    first = asyncio.new_event_loop()
    try:
        task = first.create_task(request_then_stop())
        first.run_forever()
        assert task.done()
    finally:
        first.close()
    assert lines_of(log_file) == []

    async def request_then_yield() -> None:
        await app(scope("/b"), receive, discard)
        await asyncio.sleep(0)

    asyncio.run(request_then_yield())
    assert [line["path"] for line in lines_of(log_file)] == ["/a", "/b"]


async def test_a_line_that_fails_to_render_is_reported_and_the_others_written(
    log_file: CountingFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = configure_logging(fmt="json", stream=log_file)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)

    def broken() -> str:
        raise ValueError("cannot render")

    handler.defer(lambda: '{"n": 1}', ())  # type: ignore[attr-defined]
    handler.defer(broken, ())  # type: ignore[attr-defined]
    handler.defer(lambda: '{"n": 3}', ())  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    assert lines_of(log_file) == [{"n": 1}, {"n": 3}]
    assert [r.msg for r in reported] == ["access log line"]
