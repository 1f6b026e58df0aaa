"""``safeship demo`` end to end: one command starts everything; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports")


def _wait_for(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_demo_runs_the_service_control_plane_and_traffic(tmp_path: Path) -> None:
    port = _free_port_pair()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("SAFESHIP_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "safeship.cli_entry", "demo", "--port", str(port),
         "--database-url", f"sqlite:///{tmp_path / 'demo.db'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        ready = _wait_for(f"http://127.0.0.1:{port}/health/ready")
        assert ready.status_code == 200
        orders_url = f"http://127.0.0.1:{port + 1}/orders"
        deadline = time.monotonic() + 20
        while not (orders := httpx.get(orders_url, timeout=2).json()):
            assert time.monotonic() < deadline, "the traffic generator created no orders"
            time.sleep(0.2)
        assert {"free_shipping", "gift_wrap_offered"} <= set(orders[0])
        assert httpx.get(f"http://127.0.0.1:{port + 1}/health/ready").status_code == 200
        assert "Sign in" in httpx.get(f"http://127.0.0.1:{port}/login").text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    read_key = re.search(r"read key\s+(ss_\S+)", output)
    admin_key = re.search(r"admin key\s+(ss_\S+)", output)
    assert read_key and admin_key
    assert "stopping" in output and "Traceback" not in output
