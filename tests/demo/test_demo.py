"""``safeship demo`` end to end: one command starts everything; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.child import die_with_parent

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


def _read_banner(process: subprocess.Popen[str]) -> dict[str, str]:
    """Read the demo's banner up to its traffic line; return the printed keys."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError("the demo exited early:\n" + "".join(lines))
        lines.append(line)
        if line.strip().startswith("traffic:"):
            text = "".join(lines)
            keys = dict(re.findall(r"(read|admin) key\s+(ss_\S+)", text))
            assert set(keys) == {"read", "admin"}, text
            return keys
    raise AssertionError("no banner within 60 s:\n" + "".join(lines))


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _inventory_state(base: str, key: str) -> str | None:
    rows = httpx.get(f"{base}/api/v1/breakers", headers={"X-API-Key": key}).json()
    states = [r["state"] for r in rows if r["name"] == "inventory"]
    return states[0] if states else None


def test_demo_runs_the_service_control_plane_and_traffic(tmp_path: Path) -> None:
    port = _free_port_pair()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("SAFESHIP_DATABASE_URL", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safeship.cli_entry",
            "demo",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{tmp_path / 'demo.db'}",
        ],
        cwd=tmp_path,
        env=env,
        preexec_fn=die_with_parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        keys = _read_banner(process)
        assert httpx.get(f"{base}/health/ready").status_code == 200
        orders_url = f"http://127.0.0.1:{port + 1}/orders"
        _until(lambda: bool(httpx.get(orders_url, timeout=2).json()), 20, "orders")
        order = httpx.get(orders_url, timeout=2).json()[0]
        assert {"free_shipping", "gift_wrap_offered"} <= set(order)
        assert httpx.get(f"http://127.0.0.1:{port + 1}/health/ready").status_code == 200
        assert "Sign in" in httpx.get(f"{base}/login").text

        # Every order staged order.created in its transaction; the relay delivers them.
        outbox = f"{base}/api/v1/outbox/stats"
        _until(
            lambda: (
                httpx.get(outbox, headers={"X-API-Key": keys["read"]}).json()["published_total"] > 0
            ),
            30,
            "the relay to publish order events",
        )
        assert httpx.get(outbox, headers={"X-API-Key": keys["read"]}).json()["dead"] == 0

        flags = httpx.get(f"{base}/api/v1/flags", headers={"X-API-Key": keys["read"]}).json()
        assert {"orders.free-shipping", "demo.inventory-outage"} <= {
            f["name"] for f in flags["flags"]
        }

        # Break the inventory dependency from the control plane: the breaker opens...
        admin = {"X-API-Key": keys["admin"]}
        _until(lambda: _inventory_state(base, keys["read"]) == "closed", 20, "a report")
        httpx.post(
            f"{base}/api/v1/flags/demo.inventory-outage/enable", json={}, headers=admin
        ).raise_for_status()
        _until(
            lambda: _inventory_state(base, keys["read"]) in ("open", "half_open"),
            30,
            "the inventory breaker to open",
        )
        # ...and closes again once the dependency answers.
        httpx.post(
            f"{base}/api/v1/flags/demo.inventory-outage/disable", json={}, headers=admin
        ).raise_for_status()
        _until(
            lambda: _inventory_state(base, keys["read"]) == "closed",
            30,
            "the inventory breaker to close",
        )

        # The guarded rollout runs in shadow first, is promoted to canary once its shadow
        # comparisons are clean, and breaking the candidate makes the guard turn it off.
        listing = f"{base}/api/v1/flags/orders.batched-listing"
        rollout = f"{base}/api/v1/rollouts/orders.batched-listing"
        _until(lambda: httpx.get(listing, headers=admin).json()["enabled"], 60, "the promotion")
        detail = httpx.get(rollout, headers=admin).json()
        kinds = [d["kind"] for d in reversed(detail["decisions"])]
        assert kinds[:2] == ["started", "promoted"], kinds
        assert detail["mode"] == "canary"
        promoted = next(d for d in detail["decisions"] if d["kind"] == "promoted")
        assert promoted["evidence"]["shadow"]["comparisons"] >= 30
        assert promoted["evidence"]["shadow"]["mismatch_rate"] == 0
        assert detail["shadow"]["comparisons"] >= 30
        httpx.post(
            f"{base}/api/v1/flags/demo.break-candidate/enable", json={}, headers=admin
        ).raise_for_status()
        _until(
            lambda: not httpx.get(listing, headers=admin).json()["enabled"],
            60,
            "the guard to roll the broken candidate back",
        )
        history = httpx.get(f"{listing}/history", headers=admin).json()
        assert any(h["actor"] != "demo" or "roll" in (h["reason"] or "") for h in history)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "stopping" in output and "Traceback" not in output
