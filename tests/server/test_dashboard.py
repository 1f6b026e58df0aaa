"""Dashboard sign-in: session cookie flags, CSRF on unsafe requests, revocation."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers


def sign_in(client: TestClient, key: str) -> str:
    response = client.post("/login", data={"key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get("/")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_dashboard_redirects_to_sign_in(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_wrong_key_shows_an_error_and_sets_no_cookie(client: TestClient) -> None:
    response = client.post("/login", data={"key": "nope"}, follow_redirects=False)
    assert response.status_code == 401
    assert "That key is not valid." in response.text
    assert "set-cookie" not in response.headers


def test_session_cookie_is_httponly_and_strict(client: TestClient) -> None:
    response = client.post("/login", data={"key": READ_KEY}, follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain http in tests; https sets Secure


def test_session_cookie_is_secure_over_https(client: TestClient) -> None:
    response = client.post(
        "https://testserver/login", data={"key": READ_KEY}, follow_redirects=False
    )
    assert "secure" in response.headers["set-cookie"].lower()


def test_overview_shows_health_and_audit(client: TestClient) -> None:
    client.post(
        "/api/v1/keys",
        json={"name": "viewer", "scope": "read", "reason": "audit me"},
        headers=admin_headers(),
    )
    sign_in(client, READ_KEY)
    page = client.get("/")
    assert page.status_code == 200
    assert "Component health" in page.text and "database" in page.text
    assert "key.create" in page.text and "audit me" in page.text


def test_cross_site_sign_in_is_refused(client: TestClient) -> None:
    response = client.post(
        "/login",
        data={"key": ADMIN_KEY},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_session_api_writes_need_the_csrf_token(client: TestClient) -> None:
    token = sign_in(client, ADMIN_KEY)
    body = {"name": "from-dashboard", "scope": "read"}
    assert client.get("/api/v1/me").json()["name"] == "operator"  # safe method, cookie is enough
    assert client.post("/api/v1/keys", json=body).status_code == 403
    assert (
        client.post("/api/v1/keys", json=body, headers={"X-CSRF-Token": "forged"}).status_code
        == 403
    )
    assert (
        client.post("/api/v1/keys", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    )


def test_logout_needs_csrf_and_clears_the_session(client: TestClient) -> None:
    token = sign_in(client, READ_KEY)
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_tampered_cookie_is_rejected(client: TestClient) -> None:
    sign_in(client, READ_KEY)
    cookie = client.cookies.get("safeship_session")
    assert cookie is not None
    payload, _, signature = cookie.rpartition(".")
    client.cookies.clear()
    client.cookies.set("safeship_session", payload + "." + "0" * len(signature))
    assert client.get("/api/v1/me").status_code == 401


def test_sign_in_guessing_is_limited(client: TestClient) -> None:
    for _ in range(5):
        assert client.post("/login", data={"key": "guess"}).status_code == 401
    limited = client.post("/login", data={"key": READ_KEY})
    assert limited.status_code == 429
    assert "too many failed attempts" in limited.text
    assert "retry-after" in limited.headers


def test_a_page_shows_only_the_notices_the_server_signed_for_this_session(
    client: TestClient,
) -> None:
    token = sign_in(client, ADMIN_KEY)
    crafted = client.get("/outbox", params={"m": "purged 0. Call +1 555 0100 to restore"})
    assert crafted.status_code == 200 and "Call +1 555" not in crafted.text
    done = client.post(
        "/outbox/purge", data={"expected": "0", "csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303 and "ms=" in done.headers["location"]
    assert "purged 0" in client.get(done.headers["location"]).text
    forged = done.headers["location"].replace("purged+0", "purged+9")
    assert "purged 9" not in client.get(forged).text
    client.post("/logout", data={"csrf_token": token})
    sign_in(client, ADMIN_KEY)  # a new session: the old signature is not this one's
    assert "purged 0" not in client.get(done.headers["location"]).text
