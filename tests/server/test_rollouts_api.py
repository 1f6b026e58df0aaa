"""Guarded rollouts in the control plane: API scopes, audit, transitions, bad input, pages."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from safeship.rollouts import ArmWindow, RolloutGuard
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, read_headers

PLAN = {"steps": [10, 50, 100], "min_hold": 0, "min_sample": 0}


def guard(client: TestClient) -> RolloutGuard:
    found: RolloutGuard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    return found


def create(client: TestClient, name: str = "orders", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "plan": PLAN, **extra}
    response = client.post("/api/v1/rollouts", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def audit_actions(client: TestClient, target: str) -> list[str]:
    page = client.get(f"/api/v1/audit?target={target}", headers=read_headers()).json()
    return [item["action"] for item in page["items"]]


def flag(client: TestClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/api/v1/flags/{name}", headers=read_headers()).json()
    return found


def sign_in(client: TestClient, key: str) -> str:
    assert client.post("/login", data={"key": key}, follow_redirects=False).status_code == 303
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/rollouts").text)
    assert match is not None
    return match.group(1)


def test_reading_needs_a_key_and_writing_needs_admin(client: TestClient) -> None:
    create(client)
    assert client.get("/api/v1/rollouts").status_code == 401
    listed = client.get("/api/v1/rollouts", headers=read_headers())
    assert listed.status_code == 200 and [r["name"] for r in listed.json()] == ["orders"]
    body = {"name": "other", "plan": PLAN}
    assert client.post("/api/v1/rollouts", json=body, headers=read_headers()).status_code == 403
    assert client.post("/api/v1/rollouts/orders/pause", headers=read_headers()).status_code == 403
    emergency = {"confirm": "ROLLBACK"}
    response = client.post("/api/v1/rollouts/emergency", json=emergency, headers=read_headers())
    assert response.status_code == 403
    assert guard(client).get("orders").status == "running"


def test_create_starts_at_the_first_step_and_is_audited(client: TestClient) -> None:
    created = create(client, reason="ship it")
    assert created["status"] == "running" and created["percent"] == 10.0
    assert created["flag_enabled"] is True and created["flag_percent"] == 10.0
    assert "rollout.create" in audit_actions(client, "rollout:orders")
    again = client.post("/api/v1/rollouts", json={"name": "orders"}, headers=admin_headers())
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_bad_input_is_refused_with_the_field_named(client: TestClient) -> None:
    cases = [
        ({"name": "x", "plan": {"steps": [50, 10]}}, "increasing"),
        ({"name": "x", "plan": {"steps": [150]}}, "steps"),
        ({"name": "x", "plan": {"steps": []}}, "steps"),
        ({"name": "x", "plan": {"min_hold": -1}}, "min_hold"),
        ({"name": "x", "mode": "sideways"}, "mode"),
        ({"name": "x" * 201}, "name"),
        ({"name": "has space"}, "whitespace"),
        ({"name": "x", "reason": "r" * 2001}, "reason"),
    ]
    for body, hint in cases:
        response = client.post("/api/v1/rollouts", json=body, headers=admin_headers())
        assert response.status_code == 422, body
        assert hint in response.text, (hint, response.text)
    assert client.get("/api/v1/rollouts", headers=read_headers()).json() == []
    create(client)
    response = client.post("/api/v1/rollouts/orders/jump", headers=admin_headers())
    assert response.status_code == 422
    response = client.post("/api/v1/rollouts/missing/pause", headers=admin_headers())
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.get("/api/v1/rollouts/missing", headers=read_headers()).status_code == 404
    assert client.get("/api/v1/rollouts/" + "n" * 201, headers=read_headers()).status_code == 422


def test_operator_actions_move_the_state_and_the_flag(client: TestClient) -> None:
    create(client)

    def act(action: str, expected: int = 200) -> dict[str, Any]:
        response = client.post(
            f"/api/v1/rollouts/orders/{action}", json={"reason": "test"}, headers=admin_headers()
        )
        assert response.status_code == expected, response.text
        body: dict[str, Any] = response.json()
        return body

    assert act("pause")["kind"] == "paused"
    assert guard(client).get("orders").status == "paused"
    assert act("resume")["kind"] == "resumed"
    advanced = act("advance")
    assert advanced["kind"] == "advanced" and advanced["percent"] == 50.0
    assert flag(client, "orders")["rollout_percent"] == 50.0
    assert act("rollback")["kind"] == "rolled_back"
    assert flag(client, "orders")["enabled"] is False
    assert "rolled_back" in act("pause", 409)["detail"]
    actions = audit_actions(client, "rollout:orders")
    assert {"rollout.paused", "rollout.running", "rollout.rolled_back"} <= set(actions)
    detail = client.get("/api/v1/rollouts/orders", headers=read_headers()).json()
    kinds = [d["kind"] for d in detail["decisions"]]
    assert kinds == ["rolled_back", "advanced", "resumed", "paused", "started"]
    assert all(d["actor"] == "key:operator" for d in detail["decisions"][:4])


def test_advance_past_the_last_step_completes(client: TestClient) -> None:
    create(client, plan={"steps": [50, 100], "min_hold": 0, "min_sample": 0})
    for _ in range(2):
        client.post("/api/v1/rollouts/orders/advance", headers=admin_headers())
    assert guard(client).get("orders").status == "completed"
    assert flag(client, "orders")["rollout_percent"] == 100.0
    response = client.post("/api/v1/rollouts/orders/advance", headers=admin_headers())
    assert response.status_code == 409


def test_detail_shows_arms_series_and_the_guard_evidence(client: TestClient) -> None:
    create(client)
    g = guard(client)
    control = ArmWindow(requests=500, errors=2, histogram={40: 450, 48: 50})
    candidate = ArmWindow(requests=60, errors=40, histogram={44: 60})
    g.record_window("orders", process="p1", control=control, candidate=candidate)
    decision = g.evaluate("orders")
    assert decision is not None and decision.kind == "rolled_back"
    detail = client.get("/api/v1/rollouts/orders", headers=read_headers()).json()
    assert detail["status"] == "rolled_back" and detail["percent"] == 0.0
    assert detail["arms"]["control"]["requests"] == 500
    assert detail["arms"]["candidate"]["error_rate"] == 40 / 60
    assert detail["arms"]["control"]["p50"] < detail["arms"]["control"]["p99"]
    assert len(detail["series"]) == 1 and detail["series"][0]["candidate"]["requests"] == 60
    rolled = detail["decisions"][0]
    assert rolled["actor"] == "guard" and rolled["evidence"]["verdict"]["breach"] is True
    assert detail["shadow"]["comparisons"] == 0 and detail["flag_enabled"] is False


def test_emergency_rolls_back_everything_and_kills_every_flag(client: TestClient) -> None:
    create(client, "orders")
    create(client, "search")
    client.post("/api/v1/rollouts/search/pause", headers=admin_headers())
    create(client, "done", plan={"steps": [100], "min_hold": 0, "min_sample": 0})
    client.post("/api/v1/rollouts/done/advance", headers=admin_headers())
    plain = {"name": "banner", "definition": {"name": "banner", "enabled": True,
             "strategies": [{"name": "default"}]}}  # fmt: skip
    assert client.post("/api/v1/flags", json=plain, headers=admin_headers()).status_code == 201
    missing = client.post("/api/v1/rollouts/emergency", json={}, headers=admin_headers())
    assert missing.status_code == 422
    wrong = {"confirm": "yes"}
    assert (
        client.post("/api/v1/rollouts/emergency", json=wrong, headers=admin_headers()).status_code
        == 422
    )
    body = {"confirm": "ROLLBACK", "reason": "drill"}
    response = client.post("/api/v1/rollouts/emergency", json=body, headers=admin_headers())
    assert response.status_code == 200, response.text
    done = response.json()
    assert sorted(done["rolled_back"]) == ["orders", "search"]
    assert done["flags_changed"]["banner"] is False and done["flags_changed"]["done"] is False
    statuses = {r.name: r.status for r in guard(client).all()}
    assert statuses == {"done": "completed", "orders": "rolled_back", "search": "rolled_back"}
    assert all(
        not f["enabled"]
        for f in client.get("/api/v1/flags", headers=read_headers()).json()["flags"]
    )
    assert audit_actions(client, "rollouts:*") == ["rollouts.emergency"]
    assert "flags.kill" in audit_actions(client, "flags:*")


def test_openapi_documents_the_rollout_api(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"get"} <= set(paths["/api/v1/rollouts"]) and "post" in paths["/api/v1/rollouts"]
    assert "/api/v1/rollouts/{name}/{action}" in paths
    assert "/api/v1/rollouts/emergency" in paths
    assert not any(p.startswith("/rollouts") for p in paths)


def test_pages_need_a_session_and_show_rollouts(client: TestClient) -> None:
    create(client)
    response = client.get("/rollouts", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    sign_in(client, READ_KEY)
    page = client.get("/rollouts")
    assert "orders" in page.text and "Emergency rollback" not in page.text
    detail = client.get("/rollouts/orders")
    assert detail.status_code == 200 and 'id="chart-errors"' in detail.text
    assert 'id="actions"' not in detail.text and "/static/rollouts.js" in detail.text
    assert client.get("/rollouts/missing").status_code == 404
    assert client.get("/static/rollouts.js").status_code == 200


def test_session_posts_need_the_csrf_header(client: TestClient) -> None:
    create(client)
    token = sign_in(client, ADMIN_KEY)
    assert client.post("/api/v1/rollouts/orders/pause").status_code == 403
    forged = client.post("/api/v1/rollouts/orders/pause", headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    response = client.post("/api/v1/rollouts/orders/pause", headers={"X-CSRF-Token": token})
    assert response.status_code == 200 and response.json()["actor"] == "key:operator"


def test_emergency_button_needs_admin_and_the_typed_word(client: TestClient) -> None:
    create(client)
    token = sign_in(client, READ_KEY)
    form = {"confirm": "ROLLBACK", "csrf_token": token}
    assert client.post("/rollouts/emergency", data=form).status_code == 403
    client.cookies.clear()
    token = sign_in(client, ADMIN_KEY)
    assert "Emergency rollback" in client.get("/rollouts").text
    wrong = client.post("/rollouts/emergency", data={"confirm": "rollback", "csrf_token": token})
    assert wrong.status_code == 422 and guard(client).get("orders").status == "running"
    forged = client.post("/rollouts/emergency", data={"confirm": "ROLLBACK", "csrf_token": "x"})
    assert forged.status_code == 403
    done = client.post("/rollouts/emergency", data={"confirm": "ROLLBACK", "csrf_token": token})
    assert done.status_code == 200 and "Emergency rollback: 1 rollout(s)" in done.text
    assert guard(client).get("orders").status == "rolled_back"
    assert audit_actions(client, "rollouts:*") == ["rollouts.emergency"]


def test_action_form_posts_work_without_javascript(client: TestClient) -> None:
    create(client)
    token = sign_in(client, ADMIN_KEY)
    form = {"action": "rollback", "csrf_token": token}
    response = client.post("/rollouts/orders/action", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/rollouts/orders"
    assert flag(client, "orders")["enabled"] is False
    again = client.post("/rollouts/orders/action", data=form)
    assert again.status_code == 409
    bad = client.post("/rollouts/orders/action", data={"action": "jump", "csrf_token": token})
    assert bad.status_code == 422


def test_a_rollout_whose_flag_was_deleted_can_be_undone_but_not_moved_on(
    client: TestClient,
) -> None:
    create(client, "orders")
    create(client, "search")
    guard(client).flags.delete("orders", actor="test")
    guard(client).flags.delete("search", actor="test")
    listed = client.get("/api/v1/rollouts", headers=read_headers()).json()
    assert listed[0]["flag_enabled"] is None
    response = client.post("/api/v1/rollouts/orders/advance", headers=admin_headers())
    assert response.status_code == 409 and "deleted" in response.json()["detail"]
    response = client.post("/api/v1/rollouts/orders/rollback", headers=admin_headers())
    assert response.status_code == 200 and guard(client).get("orders").status == "rolled_back"
    body = {"confirm": "ROLLBACK"}
    response = client.post("/api/v1/rollouts/emergency", json=body, headers=admin_headers())
    assert response.status_code == 200 and response.json()["rolled_back"] == ["search"]


def test_detail_shows_the_fleets_shadow_results_with_escaped_sample_diffs(
    client: TestClient,
) -> None:
    create(client, mode="shadow")
    empty = client.get("/api/v1/rollouts/orders", headers=read_headers()).json()["shadow"]
    assert (empty["comparisons"], empty["mismatch_rate"], empty["samples"]) == (0, None, [])
    sample = {
        "diff": "'total': 3 → 4",
        "context": "<script>alert(1)</script>",
        "control": "{'total': 3}",
        "candidate": "{'total': 4}",
        "candidate_ms": 1.5,
    }
    guard(client).record_shadow(
        "orders", process="web-1", counts={"runs": 10, "matches": 9, "mismatches": 1},
        samples=[sample],
    )  # fmt: skip
    shadow = client.get("/api/v1/rollouts/orders", headers=read_headers()).json()["shadow"]
    assert (shadow["comparisons"], shadow["mismatches"], shadow["mismatch_rate"]) == (10, 1, 0.1)
    assert shadow["samples"][0]["diff"] == "'total': 3 → 4"
    assert shadow["samples"][0]["kind"] == "mismatch"
    assert shadow["samples"][0]["process"] == "web-1"
    sign_in(client, READ_KEY)
    page = client.get("/rollouts/orders").text
    assert 'id="shadow-rate">10.00%' in page and "&#39;total&#39;: 3 → 4" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


def test_promote_is_admin_only_audited_and_refused_outside_shadow(client: TestClient) -> None:
    create(client, mode="shadow")
    assert flag(client, "orders")["enabled"] is False
    url = "/api/v1/rollouts/orders/promote"
    assert client.post(url, headers=read_headers()).status_code == 403
    response = client.post(url, json={"reason": "shadow clean"}, headers=admin_headers())
    assert response.status_code == 200, response.text
    assert (response.json()["kind"], response.json()["percent"]) == ("promoted", 10.0)
    detail = client.get("/api/v1/rollouts/orders", headers=read_headers()).json()
    assert (detail["mode"], detail["flag_enabled"], detail["flag_percent"]) == ("canary", True, 10)
    assert "rollout.promote" in audit_actions(client, "rollout:orders")
    again = client.post(url, headers=admin_headers())
    assert again.status_code == 409 and "shadow mode" in again.json()["detail"]
    assert (
        client.post("/api/v1/rollouts/missing/promote", headers=admin_headers()).status_code == 404
    )


def test_promote_button_posts_without_javascript(client: TestClient) -> None:
    create(client, mode="shadow")
    token = sign_in(client, ADMIN_KEY)
    assert "Promote to canary" in client.get("/rollouts/orders").text
    form = {"action": "promote", "csrf_token": token}
    response = client.post("/rollouts/orders/action", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert guard(client).get("orders").mode == "canary"
    assert client.post("/rollouts/orders/action", data=form).status_code == 409


def test_odd_values_on_rollout_routes_are_a_422_naming_the_field(client: TestClient) -> None:
    create(client)
    post_cases = [
        ("/api/v1/rollouts", {"name": "x", "reason": "a\x00b"}, "reason"),
        ("/api/v1/rollouts", {"name": "a\x00b"}, "name"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"min_sample": 10**23}}, "min_sample"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"min_hold": 10**23}}, "min_hold"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"steps": [10**23]}}, "steps"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"steps": [50, 10]}}, "steps"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"steps": [0]}}, "steps"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"steps": [[1]]}}, "steps"),
        ("/api/v1/rollouts", {"name": "x", "plan": {"steps": list(range(1, 30))}}, "steps"),
        ("/api/v1/rollouts", {"name": "x", "plan": None}, "plan"),
        ("/api/v1/rollouts/orders/pause", {"reason": "a\x00b"}, "reason"),
        ("/api/v1/rollouts/orders/pause", {"version": 10**23}, "version"),
        ("/api/v1/rollouts/emergency", {"confirm": "ROLLBACK", "reason": "a\x00b"}, "reason"),
    ]
    for path, body, field in post_cases:
        response = client.post(path, json=body, headers=admin_headers())
        assert response.status_code == 422, (path, body, response.text)
        fields = [p["field"] for p in response.json()["detail"]]
        assert any(field in f.split(".") for f in fields), (body, fields)
    for method, path in [
        ("GET", "/api/v1/rollouts/a%00b"),
        ("POST", "/api/v1/rollouts/a%00b/pause"),
    ]:
        response = client.request(method, path, headers=admin_headers())
        assert response.status_code == 422 and "name" in response.text, (path, response.text)
    assert guard(client).get("orders").status == "running"
    assert [r["name"] for r in client.get("/api/v1/rollouts", headers=read_headers()).json()] == [
        "orders"
    ]


def test_the_advance_button_carries_the_version_the_page_showed(client: TestClient) -> None:
    create(client)
    token = sign_in(client, ADMIN_KEY)
    assert 'name="version" value="1"' in client.get("/rollouts/orders").text
    form = {"action": "advance", "csrf_token": token, "version": "1"}
    first = client.post("/rollouts/orders/action", data=form, follow_redirects=False)
    assert first.status_code == 303
    again = client.post("/rollouts/orders/action", data=form)  # a second click, same page
    assert again.status_code == 409 and "version" in again.text
    assert guard(client).get("orders").step == 1
    undo = {"action": "rollback", "csrf_token": token, "version": "1"}
    assert client.post("/rollouts/orders/action", data=undo, follow_redirects=False).is_redirect
    assert guard(client).get("orders").status == "rolled_back"
