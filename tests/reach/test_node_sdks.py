"""Unleash's Node SDK (``unleash-client``) and OpenFeature's Node OFREP provider, from the
npm registry, unchanged, against the control plane (``make reach-node`` installs them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reach.conftest import Plane
from tests.reach.flag_fixtures import COLOURS, OFF, ON, ROLLOUT, USERS, own_answers, seed
from tests.server.support import READ_KEY

NODE_DIR = Path(__file__).resolve().parent / "node"


def _node() -> str:
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "unleash-client").is_dir()
    if node is None or not installed:
        reason = "node or tests/reach/node/node_modules missing: run `make reach-node`"
        if os.environ.get("SAFESHIP_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return node


def run_reader(kind: str, plane: Plane, change: tuple[str, bool]) -> tuple[dict[str, Any], bool]:
    """What the Node reader saw first, and whether it saw ``change`` applied in the store."""
    flags = {"on": ON, "off": OFF, "rollout": ROLLOUT, "variants": COLOURS}
    command = [_node(), str(NODE_DIR / "check.mjs"), kind, plane.url, READ_KEY, json.dumps(flags)]
    with subprocess.Popen(
        command,
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdin is not None
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "no output"
            first = json.loads(line)
            flag, expect = change
            plane.store.set_enabled(flag, expect, actor="test")
            process.stdin.write(json.dumps({"flag": flag, "expect": expect}) + "\n")
            process.stdin.flush()
            seen = json.loads(process.stdout.readline())["seen"] == expect
            process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
    return first, seen


@pytest.mark.parametrize("kind", ["unleash", "unleash-delta", "unleash-streaming", "ofrep"])
def test_node_sdk_matches_safeship_and_sees_a_live_change(kind: str, plane: Plane) -> None:
    seed(plane.store)
    own = own_answers(plane.store)
    users = USERS[:200]
    first, saw_change = run_reader(kind, plane, (ON, False))
    assert (first["on"], first["off"]) == (True, False)
    assert first["rollout"] == [own.is_enabled(ROLLOUT, {"userId": u}) for u in users]
    assert 0.15 < sum(first["rollout"]) / len(users) < 0.35
    expected = [own.variant(COLOURS, {"userId": u}).name for u in users]
    assert [v.get("error") for v in first["variants"]] == [None] * len(users)
    assert [v["name"] for v in first["variants"]] == expected
    payloads = [v["payload"] for v in first["variants"]]
    if kind.startswith("unleash"):
        assert payloads == [{"type": "string", "value": name.upper()} for name in expected]
    else:
        assert payloads == [name.upper() for name in expected]
    assert saw_change
    route = {"unleash": "/api/client/features", "unleash-delta": "/api/client/delta"}.get(kind)
    if route is not None:  # the SDK really used the route its mode names
        assert served_count(plane, route) > 0


def served_count(plane: Plane, route: str) -> int:
    """GET answers the control plane counted for ``route`` (its /metrics, this process)."""
    text = httpx.get(plane.url + "/metrics").text
    pattern = rf'safeship_http_requests_total{{[^}}]*route="{re.escape(route)}"[^}}]*}} (\S+)'
    return int(sum(float(value) for value in re.findall(pattern, text)))
