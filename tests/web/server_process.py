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

import httpx

HERE = Path(__file__).parent


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _wait_ready(url: str, path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
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
        _wait_ready(served.url, ready_path, time.monotonic() + 20)
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
