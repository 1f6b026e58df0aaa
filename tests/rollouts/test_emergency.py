"""The emergency rollback never skips an action in silence (SQLite and PostgreSQL).

A reason at the schema's limit rolls everything back; a rollout the database refuses to
change is reported as failed while the others are rolled back and the kill switch is
thrown; a kill switch the database refuses is reported while the rollbacks stand.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db._audit import MAX_REASON, fit_text
from safeship.rollouts import RolloutGuard
from tests.rollouts.conftest import allow_writes, refuse_writes
from tests.server.support import ADMIN_KEY, admin_headers, read_headers

PLAN = {"steps": [10, 50, 100], "min_hold": 0, "min_sample": 0}
LONGEST_REASON = "why " * (MAX_REASON // 4)  # exactly the longest reason the API accepts
EMERGENCY = "/api/v1/rollouts/emergency"


def create(client: TestClient, name: str, **extra: Any) -> None:
    body = {"name": name, "plan": PLAN, **extra}
    response = client.post("/api/v1/rollouts", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text


def plain_flag(client: TestClient, name: str) -> None:
    definition = {"name": name, "enabled": True, "strategies": [{"name": "default"}]}
    body = {"name": name, "definition": definition}
    assert client.post("/api/v1/flags", json=body, headers=admin_headers()).status_code == 201


def flags_enabled(client: TestClient) -> dict[str, bool]:
    listed = client.get("/api/v1/flags", headers=read_headers()).json()["flags"]
    return {f["name"]: f["enabled"] for f in listed}


def statuses(client: TestClient) -> dict[str, str]:
    guard: RolloutGuard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    return {r.name: r.status for r in guard.all()}


def audit(client: TestClient, target: str) -> list[dict[str, Any]]:
    page = client.get(f"/api/v1/audit?target={target}", headers=read_headers()).json()
    items: list[dict[str, Any]] = page["items"]
    return items


def outcomes(body: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["outcome"] for r in body["rollouts"]}


def test_a_reason_at_the_schema_limit_rolls_back_every_rollout_and_kills_every_flag(
    plane: TestClient,
) -> None:
    assert len(LONGEST_REASON) == MAX_REASON
    for name in ("billing", "orders", "search"):
        create(plane, name)
    plane.post("/api/v1/rollouts/search/pause", headers=admin_headers())
    plain_flag(plane, "banner")
    body = {"confirm": "ROLLBACK", "reason": LONGEST_REASON}
    response = plane.post(EMERGENCY, json=body, headers=admin_headers())
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["complete"] is True and done["problems"] == []
    assert outcomes(done) == dict.fromkeys(("billing", "orders", "search"), "rolled_back")
    assert done["kill_switch"] == {"thrown": True, "error": None}
    assert statuses(plane) == dict.fromkeys(("billing", "orders", "search"), "rolled_back")
    assert flags_enabled(plane) == dict.fromkeys(("banner", "billing", "orders", "search"), False)
    (record,) = audit(plane, "rollouts:*")
    assert record["action"] == "rollouts.emergency" and record["reason"] == LONGEST_REASON
    decision = plane.get("/api/v1/rollouts/orders", headers=read_headers()).json()["decisions"][0]
    assert decision["reason"] == fit_text("emergency: " + LONGEST_REASON)
    assert len(decision["reason"]) <= MAX_REASON
    assert re.search(r"\[… \d+ more characters cut\]$", decision["reason"])
    kill = [r for r in audit(plane, "flags:*") if r["action"] == "flags.kill"]
    assert kill and kill[0]["reason"].startswith("emergency: why why")


def test_one_failing_rollout_stops_neither_the_others_nor_the_kill_switch(
    plane: TestClient, plane_engine: sa.Engine
) -> None:
    for name in ("alpha", "broken", "gamma"):
        create(plane, name)
    plain_flag(plane, "banner")
    refuse_writes(plane_engine, "safeship_rollouts", when="OLD.name = 'broken'")
    body = {"confirm": "ROLLBACK", "reason": LONGEST_REASON}
    response = plane.post(EMERGENCY, json=body, headers=admin_headers())
    assert response.status_code == 207, response.text
    done = response.json()
    assert done["complete"] is False
    assert outcomes(done) == {"alpha": "rolled_back", "broken": "failed", "gamma": "rolled_back"}
    failed = next(r for r in done["rollouts"] if r["name"] == "broken")
    assert "write refused by the database" in failed["error"]
    assert any("'broken'" in p for p in done["problems"])
    assert done["kill_switch"]["thrown"] is True
    assert statuses(plane) == {"alpha": "rolled_back", "broken": "running", "gamma": "rolled_back"}
    assert not any(flags_enabled(plane).values())  # the kill switch covers the failed one
    assert audit(plane, "rollouts:*")[0]["after"]["complete"] is False
    allow_writes(plane_engine, "safeship_rollouts")
    again = plane.post(EMERGENCY, json=body, headers=admin_headers())
    assert again.status_code == 200 and outcomes(again.json()) == {"broken": "rolled_back"}


def test_a_refused_kill_switch_is_reported_and_the_rollbacks_stand(
    plane: TestClient, plane_engine: sa.Engine
) -> None:
    create(plane, "orders")
    plain_flag(plane, "banner")
    refuse_writes(plane_engine, "safeship_flag_state", when="OLD.id = 1", column="killed_at")
    response = plane.post(EMERGENCY, json={"confirm": "ROLLBACK"}, headers=admin_headers())
    assert response.status_code == 207, response.text
    done = response.json()
    assert outcomes(done) == {"orders": "rolled_back"}
    assert done["kill_switch"]["thrown"] is False
    assert "write refused by the database" in done["kill_switch"]["error"]
    assert any(p.startswith("kill switch not thrown") for p in done["problems"])
    assert statuses(plane) == {"orders": "rolled_back"}
    assert flags_enabled(plane) == {"banner": True, "orders": False}


def test_the_dashboard_says_what_the_emergency_could_not_do(
    plane: TestClient, plane_engine: sa.Engine
) -> None:
    create(plane, "orders")
    create(plane, "broken")
    refuse_writes(plane_engine, "safeship_rollouts", when="OLD.name = 'broken'")
    assert plane.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False).is_redirect
    match = re.search(r'name="csrf_token" value="([^"]+)"', plane.get("/rollouts").text)
    assert match is not None
    form = {"confirm": "ROLLBACK", "csrf_token": match.group(1)}
    page = plane.post("/rollouts/emergency", data=form)
    assert page.status_code == 207
    assert "NOT DONE" in page.text and "broken" in page.text
    assert statuses(plane) == {"broken": "running", "orders": "rolled_back"}


def test_a_rollout_whose_flag_was_deleted_is_still_rolled_back(plane: TestClient) -> None:
    create(plane, "orders")
    plane.app.state.plane.flags.delete("orders", actor="test")  # type: ignore[attr-defined]
    response = plane.post(EMERGENCY, json={"confirm": "ROLLBACK"}, headers=admin_headers())
    assert response.status_code == 200, response.text
    assert outcomes(response.json()) == {"orders": "rolled_back"}
    assert statuses(plane) == {"orders": "rolled_back"}
