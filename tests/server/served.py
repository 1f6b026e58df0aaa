"""A real ``safeship serve`` subprocess whose stdout and stderr the tests read line by line."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.server.support import ADMIN_KEY, READ_KEY
from tests.support.child import die_with_parent

#: Production-grade secrets (random), so the server starts with SAFESHIP_ENVIRONMENT=production.
SESSION_SECRET = "Hq3xN8vR2mT7kL4pW9cB6dF1gJ5sZ0aYeU_iO-rQ"


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    outputs: tuple[Path, Path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL only if it does not stop)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def lines(self) -> list[str]:
        """Every non-empty line the process wrote to stdout and stderr."""
        found: list[str] = []
        for path in self.outputs:
            found.extend(path.read_bytes().decode("utf-8", "replace").splitlines())
        return [line for line in found if line.strip()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SAFESHIP_")}
    env.update(
        {
            "SAFESHIP_ENVIRONMENT": "production",
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
            "SAFESHIP_SESSION_SECRET": SESSION_SECRET,
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def serve(env: Mapping[str, str], directory: Path) -> Iterator[Served]:
    """``safeship serve`` on a free port with ``env``; stopped on exit."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    out_path, err_path = directory / "serve.out", directory / "serve.err"
    command = [sys.executable, "-m", "safeship.cli_entry", "serve", "--port", str(port)]
    migrate = [sys.executable, "-m", "safeship.cli_entry", "db", "upgrade", "--create"]
    subprocess.run(migrate, env=dict(env), check=True, capture_output=True)  # serve never migrates
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            command, env=dict(env), stdout=out, stderr=err, preexec_fn=die_with_parent
        )
    served = Served(process, port, (out_path, err_path))
    try:
        _wait_ready(served)
        yield served
    finally:
        served.stop()


def _wait_ready(served: Served) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(
                f"safeship serve exited with {served.process.returncode}:\n"
                + "\n".join(served.lines()[-30:])
            )
        try:
            if httpx.get(served.url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"safeship serve on {served.url} did not answer /health")
