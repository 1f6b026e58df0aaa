"""Dashboard sessions: a cookie replayed after logout is refused, and a session's scope is
the key's current scope, not the one stored in the cookie."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.abuse.plane import Plane, serve_plane
from tests.server.support import ADMIN_KEY, READ_KEY

COOKIE = "safeship_session"


def _sign_in(plane: Plane, key: str) -> tuple[str, str]:
    """Sign in through the login form: the session cookie and the page's CSRF token."""
    with plane.anonymous() as browser:
        answer = browser.post("/login", data={"key": key})
        assert answer.status_code == 303, (answer.status_code, answer.text[:300])
        cookie = browser.cookies[COOKIE]
        page = browser.get("/outbox")
        assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, "the dashboard page carries a CSRF token"
    return cookie, token.group(1)


def _with_cookie(plane: Plane, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=plane.url, cookies={COOKIE: cookie}, timeout=30)


def test_a_session_cookie_replayed_after_logout_is_refused(plane: Plane) -> None:
    cookie, token = _sign_in(plane, ADMIN_KEY)
    with _with_cookie(plane, cookie) as browser:
        assert browser.get("/api/v1/me").status_code == 200
        assert browser.post("/logout", data={"csrf_token": token}).status_code == 303
    with _with_cookie(plane, cookie) as replay:
        assert replay.get("/api/v1/me").status_code == 401
        page = replay.get("/outbox")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        purge = replay.post("/outbox/purge", data={"expected": "0", "csrf_token": token})
        assert purge.status_code == 303 and purge.headers["location"] == "/login"


def test_a_session_loses_admin_forms_once_its_key_is_downgraded(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("downgrade")
    url = f"sqlite:///{root / 'plane.db'}"
    with serve_plane(url, root / "logs") as plane:
        cookie, token = _sign_in(plane, ADMIN_KEY)
    downgraded = f"reader:read:{READ_KEY},operator:read:{ADMIN_KEY}"
    with (
        serve_plane(url, root / "logs", SAFESHIP_ADMIN_KEYS=downgraded) as plane,
        _with_cookie(plane, cookie) as browser,
    ):
        assert browser.get("/api/v1/me").json()["scope"] == "read"
        purge = browser.post("/outbox/purge", data={"expected": "0", "csrf_token": token})
        assert purge.status_code == 403, (purge.status_code, purge.text[:300])
        kill = browser.post("/api/v1/flags/kill", json={}, headers={"X-CSRF-Token": token})
        assert kill.status_code == 403
