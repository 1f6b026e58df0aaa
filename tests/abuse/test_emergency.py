"""The emergency rollback with the longest reason the schema accepts still rolls every live
rollout back and throws the kill switch, and says so; a dashboard session can do the same."""

from __future__ import annotations

import uuid

from tests.abuse.plane import Plane

PLAN = {"steps": [10, 100], "min_hold": 0, "min_sample": 0}


def _live_rollouts(plane: Plane, count: int) -> list[str]:
    names = [f"em-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    with plane.admin() as client:
        for name in names:
            created = client.post("/api/v1/rollouts", json={"name": name, "plan": PLAN})
            assert created.status_code == 201, created.text
    return names


def test_an_emergency_rollback_with_a_2000_character_reason_undoes_every_rollout(
    plane: Plane,
) -> None:
    for length in (1990, 2000):
        names = _live_rollouts(plane, 2)
        with plane.admin() as client:
            answer = client.post(
                "/api/v1/rollouts/emergency", json={"confirm": "ROLLBACK", "reason": "r" * length}
            )
            assert answer.status_code == 200, (length, answer.status_code, answer.text[:500])
            assert set(names) <= set(answer.json()["rolled_back"]), answer.json()
            states = {r["name"]: r["status"] for r in client.get("/api/v1/rollouts").json()}
            assert all(states[n] == "rolled_back" for n in names), states
            flags = client.get("/api/v1/flags").json()
            assert flags["killed_at"] is not None
            assert not any(f["enabled"] for f in flags["flags"] if f["name"] in names)
            audit = client.get("/api/v1/audit", params={"target": "rollouts:*"}).json()["items"]
            assert audit and len(audit[0]["reason"]) <= 2000
            assert client.post("/api/v1/flags/restore", json={}).status_code == 200
