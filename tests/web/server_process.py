"""Start and stop `serve.py` subprocesses for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


#: How long a server process may take to answer for the first time.  Not a performance
#: bound: on the shared 2-core CI machine under load, ``safeship serve`` took 37 s of wall
#: time (under 3 s of CPU) to answer /health.  A process that exits is reported at once.
STARTUP_SECONDS = 120.0


def _wait_ready(
    url: str, path: str, deadline: float, process: subprocess.Popen[Any] | None = None
) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} did not answer {path}")


@contextmanager
def serve(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    ready_path: str = "/",
    extra_args: tuple[str, ...] = (),
) -> Iterator[Served]:
    """Run ``app`` under uvicorn in a subprocess; always stopped on exit."""
    command = [sys.executable, str(HERE / "serve.py"), app, "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, *extra_args],
        cwd=HERE,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        served = Served(process, port)
        _wait_ready(served.url, ready_path, time.monotonic() + STARTUP_SECONDS, process)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for a server that binds its own socket)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve_plane(env: Mapping[str, str], log_path: Path) -> Iterator[Served]:
    """``safeship serve`` (the console command, as an operator runs it) on a free port,
    with ``env`` on top of the test's environment; stdout and stderr go to ``log_path``.
    Always stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "safeship.cli_entry", "serve", "--port", str(port)]
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("SAFESHIP_")}
    migrate = [sys.executable, "-m", "safeship.cli_entry", "db", "upgrade", "--create"]
    # serve never migrates: the operator's `db upgrade` first
    subprocess.run(migrate, env={**clean, **env}, check=True, capture_output=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:
        served = Served(process, port)
        _wait_ready(served.url, "/health", time.monotonic() + STARTUP_SECONDS, process)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line for process {pid}")
