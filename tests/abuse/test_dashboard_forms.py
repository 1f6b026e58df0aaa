"""Dashboard forms and pages with odd values, signed in as an admin: never a 5xx, nothing
odd stored, and text from the URL is escaped in the page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote_plus

import httpx
import pytest

from tests.abuse.plane import Plane
from tests.server.support import ADMIN_KEY

ODD_TEXT = ("a\x00b", "\ud800", "x" * 5000, "<script>alert(1)</script>")


@pytest.fixture(scope="module")
def browser(plane: Plane) -> Iterator[tuple[httpx.Client, str, str]]:
    """A signed-in admin browser, its CSRF token, and a flag of its own."""
    flag = f"forms-{uuid.uuid4().hex[:8]}"
    with plane.admin() as admin:
        assert admin.post("/api/v1/flags", json={"name": flag}).status_code == 201
    with plane.anonymous() as client:
        assert client.post("/login", data={"key": ADMIN_KEY}).status_code == 303
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/flags").text)
        assert token is not None
        yield client, token.group(1), flag


def form_body(fields: dict[str, str]) -> bytes:
    """URL-encoded form, lone surrogates as their (invalid) UTF-8 bytes, as an attacker sends."""
    pairs = (f"{k}={quote_plus(v.encode('utf-8', 'surrogatepass'))}" for k, v in fields.items())
    return "&".join(pairs).encode("ascii")


def _forms(flag: str, odd: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"/flags/{flag}/toggle", {"reason": odd}),
        (f"/flags/{flag}/rollout", {"percent": odd[:10], "reason": odd}),
        ("/flags-kill", {"confirm": odd[:20], "reason": odd}),
        ("/flags-restore", {"reason": odd}),
        ("/breakers/svc/forms/mode", {"mode": odd[:20]}),
        ("/rollouts/emergency", {"confirm": odd[:50]}),
        (f"/rollouts/{flag}/action", {"action": odd[:20]}),
        ("/outbox/retry", {"event_id": odd[:64]}),
        ("/outbox/purge", {"expected": odd[:30]}),
        ("/logout", {"csrf_token": odd}),
    ]


def test_dashboard_forms_answer_odd_values_without_a_server_error(
    browser: tuple[httpx.Client, str, str],
) -> None:
    client, token, flag = browser
    wrong = []
    for odd in (*ODD_TEXT, "1" + "0" * 30, "-1", "NaN"):
        for path, fields in _forms(flag, odd):
            if path == "/logout":
                continue  # signing out would end the session the other forms use
            answer = client.post(
                path,
                content=form_body({**fields, "csrf_token": token}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            if answer.status_code >= 500:
                wrong.append(f"{path} {odd[:20]!r}: {answer.status_code} {answer.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert client.get("/flags").status_code == 200, "the session still works"


def test_dashboard_pages_answer_odd_names_and_escape_what_the_url_says(
    browser: tuple[httpx.Client, str, str],
) -> None:
    client, _, _ = browser
    wrong = []
    for path in ("/flags/a%00b", "/rollouts/a%00b", "/flags/%ED%A0%80", "/rollouts/" + "x" * 3000):
        answer = client.get(path)
        if answer.status_code >= 500:
            wrong.append(f"{path[:40]}: {answer.status_code} {answer.text[:200]}")
    for path in ("/flags", "/rollouts", "/outbox"):
        page = client.get(path, params={"m": "<script>alert(1)</script>"})
        if page.status_code != 200 or "<script>alert(1)</script>" in page.text:
            wrong.append(f"{path}?m=<script>: {page.status_code}, unescaped in the page")
    assert not wrong, "\n".join(wrong)
