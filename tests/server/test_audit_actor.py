"""One audit actor form everywhere: ``key:<key name>`` for the API and the dashboard (a
session acts with its key), ``cli:<operating-system user>`` for the command line."""

from __future__ import annotations

import getpass
import subprocess
import sys

import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db import list_audit
from tests.server.support import ADMIN_KEY, admin_headers
from tests.server.test_dashboard import sign_in


def _actors(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.action, r.actor) for r in list_audit(conn, limit=50)]


def test_api_dashboard_and_cli_write_one_actor_form(
    client: TestClient, engine: sa.Engine, database_url: str
) -> None:
    created = client.post("/api/v1/flags", json={"name": "checkout-v2"}, headers=admin_headers())
    assert created.status_code in (200, 201), created.text
    api_actors = {actor for _, actor in _actors(engine)}
    assert api_actors == {"key:operator"}

    csrf = sign_in(client, ADMIN_KEY)
    killed = client.post(
        "/flags-kill",
        data={"csrf_token": csrf, "reason": "drill", "confirm": "KILL"},
        follow_redirects=False,
    )
    assert killed.status_code in (200, 303), killed.text
    dashboard = [actor for action, actor in _actors(engine) if action.startswith("flags.kill")]
    assert dashboard and set(dashboard) == {"key:operator"}

    done = subprocess.run(
        [sys.executable, "-m", "safeship.cli_entry", "flags", "enable", "checkout-v2"],
        env={"PATH": "/usr/bin:/bin", "SAFESHIP_DATABASE_URL": database_url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    newest_action, newest_actor = _actors(engine)[0]
    assert newest_actor == f"cli:{getpass.getuser()}", newest_action
    assert all(":" in actor for _, actor in _actors(engine))
