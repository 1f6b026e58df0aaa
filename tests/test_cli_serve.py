"""``safeship serve`` says where it answers and, in development, how to sign in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.server.served import production_env, serve
from tests.server.support import ADMIN_KEY


def _events(lines: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            found[event["event"]] = event
    return found


def _development_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SAFESHIP_")}
    env.update({"SAFESHIP_DATABASE_URL": database_url, "SAFESHIP_LOG_FORMAT": "json", **extra})
    return env


def test_serve_in_development_without_keys_names_the_keys_create_command(
    tmp_path: Path,
) -> None:
    env = _development_env(f"sqlite:///{tmp_path / 'plane.db'}")
    with serve(env, tmp_path / "run") as served:
        events = _events(served.lines())
    assert events["server.url"]["url"] == f"http://127.0.0.1:{served.port}/"
    assert events["server.url"]["login"] == f"http://127.0.0.1:{served.port}/login"
    hint = events["server.sign_in"]["hint"]
    assert "safeship keys create ops --scope admin" in hint and "/login" in hint


def test_serve_with_configured_keys_points_at_them(tmp_path: Path) -> None:
    env = _development_env(
        f"sqlite:///{tmp_path / 'plane.db'}", SAFESHIP_ADMIN_KEYS=f"ops:admin:{ADMIN_KEY}"
    )
    with serve(env, tmp_path / "run") as served:
        lines = served.lines()
    hint = _events(lines)["server.sign_in"]["hint"]
    assert "SAFESHIP_ADMIN_KEYS" in hint
    assert ADMIN_KEY not in "\n".join(lines)  # a key is never printed


def test_serve_in_production_logs_its_url_and_no_sign_in_hint(tmp_path: Path) -> None:
    env = production_env(f"sqlite:///{tmp_path / 'plane.db'}")
    with serve(env, tmp_path / "run") as served:
        events = _events(served.lines())
    assert events["server.url"]["url"] == f"http://127.0.0.1:{served.port}/"
    assert "server.sign_in" not in events
