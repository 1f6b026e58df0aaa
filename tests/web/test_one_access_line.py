"""One access line per request under a real uvicorn, and the 500's exception line carries
the request id: ``uvicorn --no-access-log`` (as the docs say), plain ``uvicorn``, and
``log_config=uvicorn_log_config()`` all leave only safeship's ``http.request`` line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

APP = """
from fastapi import FastAPI
from safeship.web import protect

api = FastAPI()


@api.get("/ok")
async def ok() -> dict[str, bool]:
    return {{"ok": True}}


@api.get("/boom")
async def boom() -> dict[str, bool]:
    raise RuntimeError("boom")


app = protect(api{options})
"""

RUN = """
import uvicorn
from safeship.observe import uvicorn_log_config
from app import app

uvicorn.run(app, host="127.0.0.1", port={port}, log_config=uvicorn_log_config())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve_and_call(tmp_path: Path, command: list[str], port: int) -> list[dict[str, Any]]:
    out = tmp_path / "server.log"
    with out.open("wb") as sink:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, out.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/ok", headers={"X-Request-ID": "req-ok"}).status_code == 200
        boom = httpx.get(base + "/boom", headers={"X-Request-ID": "req-boom"})
        assert boom.status_code == 500
    finally:
        server.terminate()
        server.wait(30)
    lines = [line for line in out.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n" + "\n".join(lines))
    return parsed


def _check(events: list[dict[str, Any]]) -> None:
    for rid, status in (("req-ok", 200), ("req-boom", 500)):
        access = [
            e
            for e in events
            if e.get("request_id") == rid and "exception" not in e and e["event"] != "boom"
        ]
        assert [(e["logger"], e["event"], e.get("status")) for e in access] == [
            ("safeship.access", "http.request", status)
        ], access
    assert not any(e["logger"] == "uvicorn.access" for e in events)
    [error] = [e for e in events if "exception" in e]
    assert error["request_id"] == "req-boom" and "RuntimeError: boom" in error["exception"]


@pytest.mark.parametrize("flags", [["--no-access-log"], []], ids=["no-access-log", "default"])
def test_uvicorn_command_line_leaves_only_safeships_access_line(
    tmp_path: Path, flags: list[str]
) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP.format(options="")))
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), *flags]
    _check(_serve_and_call(tmp_path, command, port))


def test_uvicorn_log_config_drops_uvicorns_access_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP.format(options=", configure_logs=False")))
    port = _free_port()
    (tmp_path / "run.py").write_text(textwrap.dedent(RUN.format(port=port)))
    _check(_serve_and_call(tmp_path, [sys.executable, "run.py"], port))


def test_uvicorn_log_config_keeps_uvicorns_access_line_when_asked() -> None:
    from safeship.observe import uvicorn_log_config

    assert uvicorn_log_config()["loggers"]["uvicorn.access"]["propagate"] is False
    assert uvicorn_log_config(access_log=True)["loggers"]["uvicorn.access"]["propagate"]
