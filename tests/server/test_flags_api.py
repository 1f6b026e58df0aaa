"""Flags through the control plane's API and dashboard: scopes, audit, kill switch."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa
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
    assert history[2]["reason"] == "launch" and history[2]["actor"] == "key:operator"


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


# -- races, versions and odd values against a real server ----------------------------


@pytest.fixture
def served_url(database_url: str, engine: object) -> Iterator[str]:
    from safeship.server import create_app
    from tests.server.support import make_settings
    from tests.support.browser import served

    with served(create_app(make_settings(database_url), engine=engine)) as base:  # type: ignore[arg-type]
        yield base


def _at_once(count: int, call: Callable[[httpx.Client, int], httpx.Response]) -> list[int]:
    """``count`` calls started together from as many threads; their status codes."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def run(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            statuses.append(call(http, index).status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_twenty_concurrent_creates_of_one_flag_give_one_201_and_nineteen_409(
    served_url: str,
) -> None:
    statuses = _at_once(
        20,
        lambda http, _: http.post(
            served_url + "/api/v1/flags", json={"name": "race"}, headers=admin_headers()
        ),
    )
    assert sorted(statuses) == [201] + [409] * 19


def test_concurrent_imports_of_new_flags_never_answer_500(served_url: str) -> None:
    state = {"features": [{"name": "imported", "enabled": True}]}
    statuses = _at_once(
        10,
        lambda http, _: http.post(
            served_url + "/api/v1/flags/import", json=state, headers=admin_headers()
        ),
    )
    assert statuses == [200] * 10


def test_concurrent_puts_from_one_read_version_lose_no_update(served_url: str) -> None:
    with httpx.Client(base_url=served_url) as http:
        http.post("/api/v1/flags", json={"name": "edited"}, headers=admin_headers())
        read = http.get("/api/v1/flags/edited", headers=read_headers())
    tag = read.headers["ETag"]

    def put(http: httpx.Client, index: int) -> httpx.Response:
        return http.put(
            served_url + "/api/v1/flags/edited",
            json={"description": f"writer {index}"},
            headers={**admin_headers(), "If-Match": tag},
        )

    statuses = _at_once(10, put)
    assert sorted(statuses) == [200] + [412] * 9
    with httpx.Client(base_url=served_url) as http:
        audit = http.get("/api/v1/flags/edited/history", headers=read_headers()).json()
    assert [entry["action"] for entry in audit] == ["flag.update", "flag.create"]


def test_a_stale_version_is_refused_with_the_current_one(client: TestClient) -> None:
    created = create(client, "v")
    first = client.get("/api/v1/flags/v", headers=read_headers())
    assert first.headers["ETag"] == f'"{created["version"]}"'
    ok = client.put(
        "/api/v1/flags/v",
        json={"owner": "a"},
        headers={**admin_headers(), "If-Match": first.headers["ETag"]},
    )
    assert ok.status_code == 200 and ok.headers["ETag"] == f'"{ok.json()["version"]}"'
    stale = client.patch(
        "/api/v1/flags/v",
        json={"owner": "b"},
        headers={**admin_headers(), "If-Match": first.headers["ETag"]},
    )
    assert stale.status_code == 412
    assert stale.json()["current_version"] == ok.json()["version"]
    body_stale = client.post(
        "/api/v1/flags/v/rollout",
        json={"percent": 5, "version": created["version"]},
        headers=admin_headers(),
    )
    assert body_stale.status_code == 409
    assert body_stale.json()["current_version"] == ok.json()["version"]
    gone = client.request(
        "DELETE", "/api/v1/flags/v", json={"version": created["version"]}, headers=admin_headers()
    )
    assert gone.status_code == 409
    assert client.get("/api/v1/flags/v", headers=read_headers()).json()["owner"] == "a"


ODD_BODIES = [
    ("/api/v1/flags", {"name": "nul\x00"}, "body.name"),
    ("/api/v1/flags", {"name": "ok", "description": "a\x00b"}, "body.description"),
    ("/api/v1/flags", {"name": "ok", "owner": "\x00"}, "body.owner"),
    ("/api/v1/flags", {"name": "ok", "reason": "\x00"}, "body.reason"),
    ("/api/v1/flags", {"name": "ok", "safe_value": 0}, "body.safe_value"),
    ("/api/v1/flags", {"name": "ok", "lifetime_days": False}, "body.lifetime_days"),
    ("/api/v1/flags", {"name": "ok", "lifetime_days": "30"}, "body.lifetime_days"),
    ("/api/v1/flags", {"name": 5}, "body.name"),
    ("/api/v1/flags", {"name": "ok", "definition": {"x": "\x00"}}, "body.definition.x"),
    ("/api/v1/flags", {"name": "a\u202eb"}, "body.name"),
    ("/api/v1/flags", {"name": "e\u0301"}, "body.name"),
    ("/api/v1/flags", {"name": "a\u200bb"}, "body.name"),
    ("/api/v1/flags/f/rollout", {"percent": False}, "body.percent"),
    ("/api/v1/flags/f/rollout", {"percent": "50"}, "body.percent"),
    ("/api/v1/flags/f/rollout", {"percent": 5, "version": 10**23}, "body.version"),
    ("/api/v1/flags/f/target", {"values": ["\x00"]}, "body.values.0"),
    ("/api/v1/flags/f/schedule", {"enable_at": "0001-01-01T00:00:00+14:00"}, "body.enable_at"),
    ("/api/v1/flags/f/schedule", {"disable_at": 1700000000}, "body.disable_at"),
    ("/api/v1/flags/import", {"features": [], "segments": [{"id": 10**23}]}, "body.segments[0].id"),
    (
        "/api/v1/flags/import",
        {"features": [], "segments": [{"constraints": []}]},
        "body.segments[0].id",
    ),
    (
        "/api/v1/flags/import",
        {"features": [], "segments": [{"id": 1, "constraints": "x"}]},
        "body.segments[0].constraints",
    ),
    ("/api/v1/flags/evaluate", {"name": "f", "context": {"userId": "\x00"}}, "body.context.userId"),
]


@pytest.mark.parametrize(("path", "body", "field"), ODD_BODIES)
def test_odd_values_are_a_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    create(client, "f")
    before = client.get("/api/v1/flags/export", headers=read_headers()).json()
    response = client.post(path, json=body, headers=admin_headers())
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert response.json()["error"] == "invalid"
    assert [p["field"] for p in problems][:1] == [field], problems
    assert client.get("/api/v1/flags/export", headers=read_headers()).json() == before


def test_a_nul_in_a_path_or_query_is_a_422(client: TestClient) -> None:
    assert client.get("/api/v1/flags/a%00b", headers=read_headers()).status_code == 422
    create(client, "f")
    deleted = client.delete("/api/v1/flags/f?reason=%00", headers=admin_headers())
    assert deleted.status_code == 422


def test_the_documented_422_body_is_the_real_one(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    documented = schema["components"]["schemas"]["HTTPValidationError"]
    real = client.post("/api/v1/flags", json={"name": 5}, headers=admin_headers()).json()
    assert set(documented["required"]) == set(real)
    item = schema["components"]["schemas"]["ValidationError"]
    assert set(item["required"]) == set(real["detail"][0])


def test_evaluate_answers_while_a_segment_stored_around_the_store_is_unusable(
    client: TestClient, engine: sa.Engine
) -> None:
    from safeship.db._schema import flag_segments

    create(client, "plain", definition={"enabled": True})
    with engine.begin() as conn:
        conn.execute(sa.insert(flag_segments).values(id=3, definition={"constraints": "x"}))
    answer = client.post("/api/v1/flags/evaluate", json={"name": "plain"}, headers=read_headers())
    assert answer.status_code == 200 and answer.json()["enabled"] is True


def test_dashboard_forms_send_the_version_they_showed_and_a_stale_one_is_refused(
    client: TestClient,
) -> None:
    create(client, "dash-stale")
    token = _sign_in(client, ADMIN_KEY)
    page = client.get("/flags").text
    shown = re.findall(r'name="version" value="(\d+)"', page)
    assert len(shown) == 2  # the toggle and the rollout form
    client.post("/api/v1/flags/dash-stale/enable", json={}, headers=admin_headers())
    stale = client.post("/flags/dash-stale/toggle", data={"csrf_token": token, "version": shown[0]})
    assert stale.status_code == 409 and "reload" in stale.text
    stale_rollout = client.post(
        "/flags/dash-stale/rollout",
        data={"csrf_token": token, "percent": "10", "version": shown[1]},
    )
    assert stale_rollout.status_code == 409
    flag = client.get("/api/v1/flags/dash-stale", headers=read_headers()).json()
    assert flag["enabled"] and flag["rollout_percent"] == 100.0


def test_concurrent_creates_of_one_api_key_give_one_201_and_the_rest_409(
    served_url: str,
) -> None:
    statuses = _at_once(
        10,
        lambda http, _: http.post(
            served_url + "/api/v1/keys",
            json={"name": "racer", "scope": "read"},
            headers=admin_headers(),
        ),
    )
    assert sorted(statuses) == [201] + [409] * 9


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/rollouts", {"name": "r", "plan": {"min_sample": False}}, "body.plan.min_sample"),
        ("/api/v1/rollouts", {"name": "r", "plan": {"steps": ["5", 100]}}, "body.plan.steps.0"),
        ("/api/v1/rollouts", {"name": "r", "plan": {"min_hold": True}}, "body.plan.min_hold"),
        ("/api/v1/rollouts", {"name": 7}, "body.name"),
        ("/api/v1/rollouts", {"name": "r\x00"}, "body.name"),
        ("/api/v1/breakers/svc/db/mode", {"mode": "disabled", "reason": "\x00"}, "body.reason"),
    ],
)
def test_other_routes_share_the_strict_input_types(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    response = client.post(path, json=body, headers=admin_headers())
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field


def test_a_rollout_without_stickiness_keeps_the_one_the_flag_had(client: TestClient) -> None:
    create(client, "sticky-flag")
    url = "/api/v1/flags/sticky-flag/rollout"
    first = client.post(url, json={"percent": 25, "stickiness": "userId"}, headers=admin_headers())
    assert "by userId" in first.json()["summary"]
    kept = client.post(url, json={"percent": 100}, headers=admin_headers())
    assert kept.status_code == 200 and "100% by userId" in kept.json()["summary"]
    changed = client.post(
        url, json={"percent": 50, "stickiness": "sessionId"}, headers=admin_headers()
    )
    assert "50% by sessionId" in changed.json()["summary"]
