"""The processes compose names, run on this machine with the same commands and environment.

There is no Docker engine here, so the test reads deploy/compose.yaml and the image's ENV
from deploy/Dockerfile, fills the secrets as a `.env` would, and points the service
hostnames at local servers (a fresh PostgreSQL database, Redis, a private NATS JetStream
server) and the ports at free ones; nothing else changes.  Each service must pass its own
compose health check, and drain on SIGTERM: the control plane under load, with readiness
failing while its listener still serves and not one failed request; the relay and the
demo exit 0 within their stop grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.deploy.support import compose_file, dockerfile, interpolated
from tests.server.support import ADMIN_KEY, READ_KEY
from tests.support.child import die_with_parent

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

SESSION_SECRET = "deploy-test-session-Hq4Zr8Wm2Tc6Lx9Bn3Vd7Kp"
SECRETS = {
    "POSTGRES_PASSWORD": "deploy-test-db-Rw7Mx2Kq9Tb4Lz",
    "SAFESHIP_SESSION_SECRET": SESSION_SECRET,
    "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},ops:admin:{ADMIN_KEY}",
}
COMPOSE_PORTS = (8700, 9108, 8710)  # the demo's orders service answers on 8710 + 1


def _free_port(pair: bool = False) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or port >= 65535:
            return port
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port + 1))
            return port


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[str]:
    """A NATS JetStream server of this test only (the demo's stream stays out of the
    shared one)."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        pytest.skip("nats-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(lambda: _connects(port), 20, "the private NATS server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def _wait(ready: Any, seconds: float, what: str, process: subprocess.Popen[bytes] | None = None,
          log: Path | None = None) -> None:  # fmt: skip
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            output = log.read_text()[-3000:] if log is not None else ""
            pytest.fail(f"{what} exited with {process.returncode}:\n{output}")
        time.sleep(0.2)
    output = log.read_text()[-3000:] if log is not None else ""
    pytest.fail(f"{what} not healthy within {seconds} s:\n{output}")


@dataclass
class Local:
    """How compose's names map onto this machine."""

    database_url: str
    redis_url: str
    nats_url: str
    ports: dict[int, int] = field(default_factory=dict)

    def env_value(self, key: str, value: str) -> str:
        if "://" in value:
            host = urlsplit(value).hostname
            return {"postgres": self.database_url, "redis": self.redis_url,
                    "nats": self.nats_url}.get(host or "", value)  # fmt: skip
        if key == "SAFESHIP_HOST":
            return "127.0.0.1"  # load tests point at loopback only
        return _ports_in(self, value)


def _image_env() -> dict[str, str]:
    """ENV of the runtime stage both targets build on."""
    found: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV" and instruction.stage == "runtime":
            for pair in instruction.value.split():
                key, _, value = pair.partition("=")
                found[key] = value
    return found


@dataclass
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    healthcheck: list[str]
    grace: float


def _services(local: Local) -> dict[str, Service]:
    data = interpolated(compose_file(), SECRETS)
    base = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/tmp")}  # fmt: skip
    out = {}
    for name in ("migrate", "control-plane", "relay", "demo"):
        spec: Mapping[str, Any] = data["services"][name]
        env = {**base}
        for key, value in {**_image_env(), **spec.get("environment", {})}.items():
            env[key] = local.env_value(key, str(value))
        command = [_ports_in(local, part) for part in spec["command"]]
        check = [_ports_in(local, part) for part in spec.get("healthcheck", {}).get("test", [])]
        grace = float(str(spec.get("stop_grace_period", "10s")).rstrip("s"))
        out[name] = Service(name, command, env, check[1:] if check[:1] == ["CMD"] else check,
                            grace)  # fmt: skip
    return out


def _ports_in(local: Local, part: str) -> str:
    for compose_port, port in local.ports.items():
        if part == str(compose_port):
            return str(port)
        part = part.replace(f"127.0.0.1:{compose_port}", f"127.0.0.1:{port}")
        part = part.replace(f"--port {compose_port}", f"--port {port}")
    if local.ports.get(8710):
        part = part.replace("127.0.0.1:8711", f"127.0.0.1:{local.ports[8710] + 1}")
    return part


@dataclass
class Running:
    service: Service
    process: subprocess.Popen[bytes]
    log: Path

    def healthy(self) -> bool:
        result = subprocess.run(self.service.healthcheck, env=self.service.env,
                                capture_output=True, timeout=10, check=False)  # fmt: skip
        return result.returncode == 0


def _start(service: Service, tmp_path: Path) -> Running:
    log = tmp_path / f"{service.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(service.command, env=service.env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)  # fmt: skip
    return Running(service, process, log)


def _stop(running: Running) -> None:
    if running.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait(10)


class Balancer:
    """A load balancer in miniature: polls readiness like a probe and routes a steady
    load while the target is ready; counts every routed request's result."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.routing = threading.Event()
        self.routing.set()
        self.stopped = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.after_signal = 0
        self.signalled = threading.Event()
        self.saw_not_ready = False
        self._lock = threading.Lock()

    def probe(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stopped.is_set():
                try:
                    status = client.get(f"{self.base}/health/ready").status_code
                except httpx.HTTPError:
                    status = 0
                if status != 200 and self.signalled.is_set():
                    self.saw_not_ready = self.saw_not_ready or status == 503
                    self.routing.clear()
                time.sleep(0.1)

    def load(self) -> None:
        headers = {"X-API-Key": READ_KEY}
        with httpx.Client(timeout=5) as client:
            while not self.stopped.is_set() and self.routing.is_set():
                try:
                    response = client.get(f"{self.base}/api/v1/flags", headers=headers)
                    good = response.status_code == 200
                    detail = f"status {response.status_code}"
                except httpx.HTTPError as exc:
                    good, detail = False, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if good:
                        self.ok += 1
                        self.after_signal += self.signalled.is_set()
                    else:
                        self.failed.append(detail)


def test_the_compose_processes_come_up_healthy_and_drain_on_sigterm(
    tmp_path: Path, postgres_url: str, redis_url: str, private_nats: str
) -> None:
    ports = {8700: _free_port(), 9108: _free_port(), 8710: _free_port(pair=True)}
    local = Local(postgres_url, redis_url, private_nats, ports)
    services = _services(local)
    assert services["control-plane"].env["SAFESHIP_ENVIRONMENT"] == "production"
    assert services["control-plane"].env["SAFESHIP_SESSION_SECRET"] == SESSION_SECRET

    migrate = services["migrate"]
    done = subprocess.run(migrate.command, env=migrate.env, capture_output=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()

    running = [_start(services[name], tmp_path) for name in ("control-plane", "relay", "demo")]
    try:
        for item in running:
            _wait(item.healthy, 90, item.service.name, item.process, item.log)
        plane, relay, demo = running
        _drain_under_load(plane, ports[8700])
        for item in (relay, demo):
            started = time.monotonic()
            item.process.send_signal(signal.SIGTERM)
            code = item.process.wait(item.service.grace)
            assert code == 0, item.log.read_text()[-3000:]
            assert time.monotonic() - started < item.service.grace
    finally:
        for item in running:
            _stop(item)


def _drain_under_load(plane: Running, port: int) -> None:
    command = plane.service.command
    drain = float(command[command.index("--drain-delay") + 1])
    balancer = Balancer(f"http://127.0.0.1:{port}")
    threads = [threading.Thread(target=balancer.probe)] + [
        threading.Thread(target=balancer.load) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while balancer.ok < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        signalled_at = time.monotonic()
        balancer.signalled.set()
        plane.process.send_signal(signal.SIGTERM)
        code = plane.process.wait(plane.service.grace)
        stopped_after = time.monotonic() - signalled_at
    finally:
        balancer.stopped.set()
        for thread in threads:
            thread.join(10)
    output = plane.log.read_text()[-3000:]
    assert code == 0, output
    assert balancer.failed == [], balancer.failed[:5]
    assert balancer.ok >= 50
    assert balancer.after_signal > 0  # requests kept being served after SIGTERM
    assert balancer.saw_not_ready, "readiness never answered 503 while the listener served"
    assert drain <= stopped_after < drain + 10 + 5, stopped_after
