"""Flags through the control plane's API and dashboard: scopes, audit, kill switch."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, read_headers


def create(client: TestClient, name: str, **extra: object) -> dict[str, object]:
    response = client.post("/api/v1/flags", json={"name": name, **extra}, headers=admin_headers())
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_create_enable_rollout_target_and_history(client: TestClient) -> None:
    created = create(client, "checkout-v2", description="new checkout", owner="payments")
    assert created["enabled"] is False and created["version"] == 1
    on = client.post(
        "/api/v1/flags/checkout-v2/enable", json={"reason": "launch"}, headers=admin_headers()
    ).json()
    assert on["enabled"] is True and on["rollout_percent"] == 100.0
    rolled = client.post(
        "/api/v1/flags/checkout-v2/rollout",
        json={"percent": 25, "stickiness": "userId"},
        headers=admin_headers(),
    )
    assert rolled.json()["rollout_percent"] == 25.0
    targeted = client.post(
        "/api/v1/flags/checkout-v2/target",
        json={"values": ["42"], "field": "userId"},
        headers=admin_headers(),
    )
    assert "1 userId(s)" in targeted.json()["summary"]

    evaluation = client.post(
        "/api/v1/flags/evaluate",
        json={"name": "checkout-v2", "context": {"userId": "42"}},
        headers=read_headers(),
    ).json()
    assert evaluation["enabled"] is True

    history = client.get("/api/v1/flags/checkout-v2/history", headers=read_headers()).json()
    assert [h["action"] for h in history] == [
        "flag.target",
        "flag.rollout",
        "flag.enable",
        "flag.create",
    ]
    assert history[2]["reason"] == "launch" and history[2]["actor"] == "operator"


def test_reads_need_read_scope_and_writes_need_admin(client: TestClient) -> None:
    create(client, "f")
    assert client.get("/api/v1/flags").status_code == 401
    assert client.get("/api/v1/flags", headers=read_headers()).status_code == 200
    assert client.post("/api/v1/flags/f/enable", json={}, headers=read_headers()).status_code == 403
    assert client.post("/api/v1/flags/kill", json={}, headers=read_headers()).status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/flags/missing/enable", {}, 404),
        ("/api/v1/flags/f/rollout", {"percent": 101}, 422),
        ("/api/v1/flags/f/rollout", {"percent": "lots"}, 422),
        ("/api/v1/flags/f/schedule", {"enable_at": "2030-01-01T00:00:00"}, 422),
        ("/api/v1/flags", {"name": "f"}, 409),
        ("/api/v1/flags", {"name": "has space"}, 422),
        ("/api/v1/flags", {"name": "x", "definition": {"strategies": 5}}, 422),
    ],
)
def test_bad_requests_get_clear_errors_and_change_nothing(
    client: TestClient, path: str, body: dict[str, object], status: int
) -> None:
    create(client, "f")
    response = client.post(path, json=body, headers=admin_headers())
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    listing = client.get("/api/v1/flags", headers=read_headers()).json()
    assert listing["version"] == 1 and [f["name"] for f in listing["flags"]] == ["f"]


def test_kill_switch_and_restore(client: TestClient) -> None:
    for name in ("a", "b"):
        create(client, name)
        client.post(f"/api/v1/flags/{name}/enable", json={}, headers=admin_headers())
    killed = client.post("/api/v1/flags/kill", json={"reason": "incident"}, headers=admin_headers())
    assert killed.json() == {"changed": {"a": False, "b": False}}
    listing = client.get("/api/v1/flags", headers=read_headers()).json()
    assert listing["killed_at"] and not any(f["enabled"] for f in listing["flags"])
    restored = client.post("/api/v1/flags/restore", json={}, headers=admin_headers())
    assert restored.json() == {"changed": {"a": True, "b": True}}
    assert client.post("/api/v1/flags/restore", json={}, headers=admin_headers()).status_code == 409


def test_import_export_and_stale(client: TestClient) -> None:
    state = {"version": 1, "features": [{"name": "imp", "enabled": True, "strategies": []}]}
    imported = client.post("/api/v1/flags/import", json=state, headers=admin_headers())
    assert imported.json() == {"imported": ["imp"]}
    exported = client.get("/api/v1/flags/export", headers=read_headers()).json()
    assert exported["features"][0]["name"] == "imp"
    assert client.get("/api/v1/flags/stale?days=1", headers=read_headers()).status_code == 200


def test_delete(client: TestClient) -> None:
    create(client, "gone")
    assert (
        client.delete("/api/v1/flags/gone?reason=done", headers=admin_headers()).status_code == 204
    )
    assert client.get("/api/v1/flags/gone", headers=read_headers()).status_code == 404


def _sign_in(client: TestClient, key: str) -> str:
    client.post("/login", data={"key": key})
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/flags").text)
    assert match is not None
    return match.group(1)


def test_dashboard_lists_flags_and_admin_can_toggle_and_roll_out(client: TestClient) -> None:
    create(client, "dash-flag", description="shown on the page")
    token = _sign_in(client, ADMIN_KEY)
    page = client.get("/flags")
    assert "dash-flag" in page.text and "shown on the page" in page.text
    toggled = client.post(
        "/flags/dash-flag/toggle", data={"csrf_token": token}, follow_redirects=False
    )
    assert toggled.status_code == 303
    client.post("/flags/dash-flag/rollout", data={"csrf_token": token, "percent": "30"})
    flag = client.get("/api/v1/flags/dash-flag").json()
    assert flag["enabled"] and flag["rollout_percent"] == 30.0
    assert "flag.rollout" in client.get("/flags/dash-flag").text


def test_dashboard_writes_need_csrf_and_admin(client: TestClient) -> None:
    create(client, "guarded")
    _sign_in(client, READ_KEY)
    page = client.get("/flags")
    assert "Turn on" not in page.text and "Kill switch" not in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert client.post("/flags/guarded/toggle", data={"csrf_token": token}).status_code == 403
    client.cookies.clear()
    _sign_in(client, ADMIN_KEY)
    assert client.post("/flags/guarded/toggle", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/api/v1/flags/guarded", headers=read_headers()).json()["enabled"] is False


def test_dashboard_kill_switch_needs_typed_confirmation(client: TestClient) -> None:
    create(client, "k")
    client.post("/api/v1/flags/k/enable", json={}, headers=admin_headers())
    token = _sign_in(client, ADMIN_KEY)
    refused = client.post(
        "/flags-kill", data={"csrf_token": token, "reason": "x", "confirm": "yes"}
    )
    assert refused.status_code == 400
    client.post("/flags-kill", data={"csrf_token": token, "reason": "drill", "confirm": "KILL"})
    assert client.get("/api/v1/flags/k", headers=read_headers()).json()["enabled"] is False
    assert "Kill switch engaged" in client.get("/flags").text
