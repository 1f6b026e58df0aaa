"""The README's adoption path, end to end, as a new user takes it.

A fresh directory holds the user's own small FastAPI orders service (``orders_service.py``,
the README's lines: flags, a retry + breaker pipeline, ``protect()``, an outbox event
staged with each order) on PostgreSQL, set by ``SAFESHIP_DATABASE_URL`` only. Then the
command-line steps of the README and docs run unattended (no terminal, as a script or CI
runs them) and each behaviour issue #15 asked for is checked where the user meets it:

* every command says which database it uses; ``flags list`` on an unmigrated database says
  "run `safeship db upgrade`" and fails; only ``db upgrade`` migrates;
* a misspelt ``SAFESHIP_*`` variable names the closest one and ``safeship settings``;
* ``flags kill`` needs ``--yes`` without a terminal; the audit trail names ``cli:<user>``
  and ``key:<name>``;
* the service under ``uvicorn --no-access-log`` writes one access line per request, and
  the 500's traceback carries the request id;
* ``safeship serve`` logs its URL and, in development, how to sign in;
* ``safeship outbox relay`` takes ``SAFESHIP_BROKER_URL``, creates its JetStream stream,
  publishes ``order.created`` on ``<prefix>order.created`` (not ``order.order.created``),
  serves ``/metrics`` and ``/health`` and logs its backlog;
* the flag steers the running service without a deploy (rollout on, kill switch off).

``test_adoption_in_the_project_venv`` (the normal suite) uses this checkout's venv;
``test_adoption_in_a_fresh_venv`` (slow, ``SAFESHIP_SOAK=1 pytest tests/adoption``) first
runs ``python -m venv`` and ``pip install '<checkout>[all]'``.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.web.server_process import STARTUP_SECONDS

ROOT = Path(__file__).resolve().parents[2]
SERVICE = Path(__file__).with_name("orders_service.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait(condition: Callable[[], bool], what: str, timeout: float = STARTUP_SECONDS) -> None:
    """Until ``condition``, for at most ``timeout`` s: an allowance for a loaded machine
    (processes start here), not a performance bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


class Background:
    """A long-running command; its stdout and stderr collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, sink), daemon=True)
            for pipe, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: Any, sink: list[str]) -> None:
        for line in pipe:
            sink.append(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        return _json_lines(self.out + self.err)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


class Adopter:
    """A new user's shell: one interpreter (its venv), a fresh directory, a clean env."""

    def __init__(self, python: Path, home: Path, database_url: str) -> None:
        self.python = python
        self.home = home
        script = python.parent / "safeship"
        self.safeship = (
            [str(script)] if script.exists() else [str(python), "-m", "safeship.cli_entry"]
        )
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("SAFESHIP_")}
        base.pop("PYTHONPATH", None)
        base.update({"HOME": str(home), "SAFESHIP_DATABASE_URL": database_url})
        self.env = base
        self.running: list[Background] = []

    def run(self, *args: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.safeship, *args],
            cwd=self.home,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if expect == 0:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        else:
            assert done.returncode != 0, (args, done.stdout, done.stderr)
        return done

    def start(self, command: list[str], **env: str) -> Background:
        process = Background(command, {**self.env, **env}, self.home)
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            process.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        answer = httpx.get(url, headers=headers, timeout=10)
    except httpx.TransportError:
        return 0, ""
    return answer.status_code, answer.text


def _serve_orders(user: Adopter) -> tuple[Background, str]:
    port = _free_port()
    shutil.copy(SERVICE, user.home / "orders_service.py")
    service = user.start(
        [
            *(str(user.python), "-m", "uvicorn", "orders_service:app"),
            *("--no-access-log", "--port", str(port)),
        ]
    )
    base = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert service.alive(), "\n".join(service.out + service.err)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    _wait(answering, "the orders service")
    return service, base


def _order(base: str, user_id: str, request_id: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{base}/orders", params={"user_id": user_id}, headers={"X-Request-ID": request_id}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _check_database_steps(user: Adopter) -> None:
    refused = user.run("flags", "list", expect=1)
    assert refused.stderr.startswith("using postgresql"), refused.stderr
    assert "safeship db upgrade" in refused.stderr
    misspelt = user.run("flags", "list", expect=1, SAFESHIP_DATABSE_URL="x")
    assert "did you mean SAFESHIP_DATABASE_URL?" in misspelt.stderr
    assert "safeship settings" in misspelt.stderr
    upgraded = user.run("db", "upgrade")
    assert upgraded.stderr.startswith("using postgresql") and "revision" in upgraded.stdout
    user.run("flags", "create", "checkout-v2", "--description", "new checkout")
    user.run("flags", "rollout", "checkout-v2", "100%", "--stickiness", "userId")


def _check_one_access_line(service: Background, base: str) -> None:
    assert _order(base, "u1", "adopt-order-1")["variant"] == "v2"
    boom = httpx.get(f"{base}/boom", headers={"X-Request-ID": "adopt-boom"})
    assert boom.status_code == 500

    def logged() -> bool:
        return any("exception" in e for e in service.events())

    _wait(logged, "the service's lines for the 500")
    events = service.events()
    for rid, status in (("adopt-order-1", 200), ("adopt-boom", 500)):
        access = [e for e in events if e.get("request_id") == rid and "exception" not in e]
        assert [(e["logger"], e.get("status")) for e in access] == [("safeship.access", status)]
    assert not any(e["logger"] == "uvicorn.access" for e in events)
    [error] = [e for e in events if "exception" in e]
    assert error["request_id"] == "adopt-boom" and "nonsense" in error["exception"]


def _check_relay(user: Adopter, nats_url: str, engine: sa.Engine) -> None:
    prefix = "adopt" + uuid.uuid4().hex[:8] + "."
    stream = "ADOPT" + uuid.uuid4().hex[:8].upper()
    relay = user.start(
        [
            *(*user.safeship, "outbox", "relay", "--subject-prefix", prefix, "--stream", stream),
            *("--metrics-port", "0", "--backlog-every", "1"),
        ],
        SAFESHIP_BROKER_URL=nats_url,
    )
    try:
        _wait(lambda: any("/metrics" in line for line in relay.out), "the relay's metrics URL")
        port = re.search(r":(\d+)/metrics", next(x for x in relay.out if "/metrics" in x))
        assert port is not None
        metrics = f"http://127.0.0.1:{port.group(1)}"

        def drained() -> bool:
            with engine.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM safeship_outbox")).scalar_one()
            return bool(left == 0)

        _wait(drained, "the relay to publish the order event")
        status, text = _get(metrics + "/metrics")
        assert status == 200 and "safeship_outbox_backlog 0.0" in text
        _wait(lambda: _get(metrics + "/health")[0] == 200, "the relay's /health")
        _wait(
            lambda: any(e["event"] == "outbox.relay.backlog" for e in relay.events()),
            "an outbox.relay.backlog line",
        )
    finally:
        assert relay.stop() == 0, relay.err
    subjects = _stream_subjects(nats_url, stream)
    assert subjects == [f"{prefix}order.created"]


def _stream_subjects(nats_url: str, stream: str) -> list[str]:
    import asyncio

    import nats

    async def read() -> list[str]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
            return [
                str((await js.get_msg(stream, seq)).subject)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
        finally:
            await js.delete_stream(stream)
            await nc.close()

    return asyncio.run(read())


def _check_serve(user: Adopter) -> None:
    port = _free_port()
    plane = user.start([*user.safeship, "serve", "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"

    def ready() -> bool:
        assert plane.alive(), "\n".join(plane.out + plane.err)
        return _get(url + "health/ready")[0] == 200

    _wait(ready, "the control plane's readiness")
    events = {e["event"]: e for e in plane.events()}
    assert events["server.url"]["url"] == url
    assert "safeship keys create" in events["server.sign_in"]["hint"]
    created = user.run("keys", "create", "ops", "--scope", "admin")
    key = created.stdout.split(": ", 1)[1].split()[0]
    made = httpx.post(url + "api/v1/flags", json={"name": "via-api"}, headers={"X-API-Key": key})
    assert made.status_code in (200, 201), made.text
    status, body = _get(url + "api/v1/audit", {"X-API-Key": key})
    assert status == 200, body
    actors = {entry["actor"] for entry in json.loads(body)["items"]}
    assert {f"cli:{getpass.getuser()}", "key:ops"} <= actors, actors


def _check_kill_switch(user: Adopter, base: str) -> None:
    refused = user.run("flags", "kill", "--reason", "adoption drill", expect=1)
    assert "--yes" in refused.stderr
    user.run("flags", "kill", "--reason", "adoption drill", "--yes")

    def switched_off() -> bool:
        return bool(_order(base, "u2", "adopt-order-2")["variant"] == "v1")

    _wait(switched_off, "the running service to see the kill switch", timeout=15)


def adopt(python: Path, home: Path, database_url: str, nats_url: str) -> None:
    """The whole path; each step asserts what the user should see."""
    user = Adopter(python, home, database_url)
    engine = sa.create_engine(database_url)
    try:
        _check_database_steps(user)
        service, base = _serve_orders(user)
        _check_one_access_line(service, base)
        _check_relay(user, nats_url, engine)
        _check_serve(user)
        _check_kill_switch(user, base)
    finally:
        user.stop_all()
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.nats
def test_adoption_in_the_project_venv(postgres_url: str, nats_url: str, tmp_path: Path) -> None:
    adopt(Path(sys.executable), tmp_path, postgres_url, nats_url)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SAFESHIP_SOAK"), reason="installs every extra: set SAFESHIP_SOAK=1"
)
@pytest.mark.timeout(1800)
@pytest.mark.postgres
@pytest.mark.nats
def test_adoption_in_a_fresh_venv(postgres_url: str, nats_url: str, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[all]"],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    home = tmp_path / "home"
    home.mkdir()
    adopt(python, home, postgres_url, nats_url)
