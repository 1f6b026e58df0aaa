"""Run a real ``safeship serve`` subprocess for the abuse suite, and read what it wrote.

The server runs as an operator would run it: the ``safeship`` console entry point,
settings from ``SAFESHIP_*`` variables, JSON logs on stderr. Its stdout and stderr go to
files, so the tests can check every line it wrote and never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.server.support import ADMIN_KEY, READ_KEY
from tests.web.server_process import STARTUP_SECONDS, _wait_ready

#: A session secret strong enough for production (random, 43 characters).
SESSION_SECRET = secrets.token_urlsafe(32)
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Plane:
    """A running control plane: its URL, process and the files it writes to."""

    process: subprocess.Popen[bytes]
    port: int
    logs: tuple[Path, Path]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def log_size(self) -> tuple[int, int]:
        return (self.logs[0].stat().st_size, self.logs[1].stat().st_size)

    def lines_since(self, mark: tuple[int, int] = (0, 0)) -> list[str]:
        """Every line the process wrote to stdout and stderr after ``mark``."""
        found: list[str] = []
        for path, offset in zip(self.logs, mark, strict=True):
            with path.open("rb") as f:
                f.seek(offset)
                found.extend(f.read().decode("utf-8", "replace").splitlines())
        return [line for line in found if line.strip()]

    def admin(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"X-API-Key": ADMIN_KEY}, timeout=30, **kwargs
        )

    def reader(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"X-API-Key": READ_KEY}, timeout=30, **kwargs
        )

    def anonymous(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def plane_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a served control plane: known keys, JSON logs, no cache."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SAFESHIP_")}
    env.update(
        {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
            "SAFESHIP_SESSION_SECRET": SESSION_SECRET,
            "SAFESHIP_HEALTH_CACHE_SECONDS": "0",
            "SAFESHIP_LOG_FORMAT": "json",
            "SAFESHIP_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def serve_plane(database_url: str, logs_dir: Path, **extra: str) -> Iterator[Plane]:
    """``safeship serve`` on a free port; stopped (SIGTERM, then SIGKILL) on exit."""
    env = plane_env(database_url, **extra)
    port = free_port()
    logs_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    out_path, err_path = logs_dir / f"serve-{tag}.out", logs_dir / f"serve-{tag}.err"
    command = [sys.executable, "-m", "safeship.cli_entry", "serve", "--port", str(port)]
    migrate = [sys.executable, "-m", "safeship.cli_entry", "db", "upgrade", "--create"]
    subprocess.run(migrate, env=env, check=True, capture_output=True)  # serve never migrates
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
    plane = Plane(process, port, (out_path, err_path), env)
    try:
        _wait_started(plane)
        yield plane
    finally:
        stop(plane)


def _wait_started(plane: Plane) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if plane.process.poll() is not None:
            raise RuntimeError(
                f"safeship serve exited with {plane.process.returncode}:\n"
                + "\n".join(plane.lines_since()[-30:])
            )
        try:
            _wait_ready(plane.url, "/health", min(deadline, time.monotonic() + 1))
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"safeship serve on {plane.url} did not answer /health")


def stop(plane: Plane) -> None:
    if plane.process.poll() is None:
        plane.process.terminate()
        try:
            plane.process.wait(15)
        except subprocess.TimeoutExpired:
            plane.process.kill()
            plane.process.wait()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one served plane (dropped afterwards)."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"safeship_abuse_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def not_json_lines(lines: list[str]) -> list[str]:
    """The lines that are not one JSON object each."""
    bad = []
    for line in lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(parsed, dict):
            bad.append(line)
    return bad
