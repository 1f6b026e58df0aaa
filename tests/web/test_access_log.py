"""The access log: one event per request through logging, its lines written together at
the end of the event-loop iteration."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeship.observe import configure_logging, get_logger
from safeship.observe._logging import bound_context, request_id
from safeship.web import protect
from safeship.web._asgi import Receive, Scope, Send


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


@pytest.mark.usefixtures("restore_logging")
async def test_the_access_line_holds_the_request_masked() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    await protect(pong, metrics_path=None)(scope("/users/jane@example.com"), receive, discard)
    line = json.loads(stream.getvalue())
    assert line["event"] == "http.request" and line["logger"] == "safeship.access"
    assert line["path"] == "/users/***" and line["status"] == 200
    assert line["client"] == "10.1.2.3" and line["level"] == "info"
    assert len(line["request_id"]) == 32 and line["duration_ms"] >= 0


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


async def test_a_warning_is_written_at_once_after_the_pending_lines(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    await app(scope(), receive, discard)
    get_logger("app.orders").info("order.shipped", order_id=7)
    get_logger("app.orders").warning("order.late", order_id=7)
    events = [line["event"] for line in lines_of(log_file)]
    assert events == ["http.request", "order.shipped", "order.late"]


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


async def test_bound_context_and_another_handler_see_the_access_event(
    log_file: CountingFile,
) -> None:
    configure_logging(fmt="json", stream=log_file)
    app = protect(pong, metrics_path=None)
    with bound_context(tenant="acme"):
        await app(scope(), receive, discard)
    await asyncio.sleep(0)
    assert lines_of(log_file)[0]["tenant"] == "acme"

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
    await asyncio.sleep(0)
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


class Unprintable:
    def __repr__(self) -> str:
        raise ValueError("cannot render")


async def test_a_line_that_fails_to_render_is_reported_and_the_others_written(
    log_file: CountingFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = configure_logging(fmt="json", stream=log_file)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    log = get_logger("app.lines")
    log.info("line.one", n=1)
    log.info("line.two", n=Unprintable())
    log.info("line.three", n=3)
    await asyncio.sleep(0)
    assert [line["n"] for line in lines_of(log_file)] == [1, 3]
    assert [r.msg["event"] for r in reported] == ["line.two"]  # type: ignore[index]
