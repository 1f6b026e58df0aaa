"""kill -9 of a real uvicorn server mid-request (SQLite, Redis, PostgreSQL): the retry
never re-runs the handler silently and never waits a day -- 409 "outcome unknown" once
the lease ends, or the route's reconcile hook decides."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.idempotency.server_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the test server did not start")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    urls: dict[str, Callable[[], str]] = {
        "redis": lambda: str(request.getfixturevalue("redis_url")),
        "postgres": lambda: str(request.getfixturevalue("postgres_url")),
        "sqlite": lambda: f"sqlite:///{tmp_path / 'keys.db'}",
    }
    store = urls[request.param]()
    return {
        **os.environ,
        "IDEM_TEST_MARKER": str(tmp_path / "charges.log"),
        "IDEM_TEST_STORE": store,
        "IDEM_TEST_PREFIX": f"test:kill:{uuid.uuid4().hex}:",
    }


def _charges(env: dict[str, str], route: str) -> int:
    path = Path(env["IDEM_TEST_MARKER"])
    return path.read_text().splitlines().count(route) if path.exists() else 0


def _kill_mid_request(env: dict[str, str], path: str, route: str, headers: dict[str, str]) -> None:
    server = Server(env)
    try:

        def send() -> None:
            with contextlib.suppress(httpx.TransportError):  # the server dies under it
                httpx.post(server.url + path, headers=headers, timeout=60)

        threading.Thread(target=send, daemon=True).start()
        deadline = time.monotonic() + 20
        while _charges(env, route) == 0:
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.02)
        server.kill()
    finally:
        server.stop()


def _retry_until_settled(url: str, path: str, headers: dict[str, str]) -> list[httpx.Response]:
    answers, deadline = [], time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = httpx.post(url + path, headers=headers, timeout=10)
        answers.append(answer)
        if answer.status_code != 409 or answer.json()["type"].endswith(":outcome-unknown"):
            return answers
        time.sleep(0.2)
    raise AssertionError("the key stayed in flight past its lease")


def test_after_kill_9_the_retry_answers_outcome_unknown_and_never_reruns(
    env: dict[str, str],
) -> None:
    headers = {"x-key": "alice", "idempotency-key": str(uuid.uuid4())}
    _kill_mid_request(env, "/charge", "plain", headers)
    server = Server(env)
    try:
        answers = _retry_until_settled(server.url, "/charge", headers)
        later = httpx.post(server.url + "/charge", headers=headers, timeout=10)
    finally:
        server.stop()
    for early in answers[:-1]:  # only while the dead request's 1 s lease lasted
        assert early.json()["type"] == "urn:safeship:idempotency:in-flight"
    for final in (answers[-1], later):
        assert final.status_code == 409
        assert final.headers["content-type"] == "application/problem+json"
        assert final.json()["type"] == "urn:safeship:idempotency:outcome-unknown"
    assert _charges(env, "plain") == 1


def test_after_kill_9_the_routes_reconcile_hook_decides_and_is_replayed(
    env: dict[str, str],
) -> None:
    headers = {"x-key": "alice", "idempotency-key": str(uuid.uuid4())}
    _kill_mid_request(env, "/charge-reconciled", "reconciled", headers)
    server = Server(env)
    try:
        answers = _retry_until_settled(server.url, "/charge-reconciled", headers)
        replay = httpx.post(server.url + "/charge-reconciled", headers=headers, timeout=10)
    finally:
        server.stop()
    decided = answers[-1]
    assert decided.status_code == 201 and decided.json() == {"charged": True, "by": "reconcile"}
    assert replay.content == decided.content and replay.headers["idempotent-replayed"] == "true"
    assert _charges(env, "reconciled") == 1
