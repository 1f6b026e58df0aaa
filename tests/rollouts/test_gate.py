"""The guard as a deploy tool's gate: GET for an Argo Rollouts web metric, POST for a
Flagger webhook (412 on fail), on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from safeship.rollouts import ArmWindow, Plan, RolloutGuard
from safeship.rollouts._stats import bucket_of
from tests.server.support import admin_headers, read_headers

PLAN = Plan(steps=(50, 100), min_hold=0, min_sample=0)


def _window(requests: int, errors: int) -> ArmWindow:
    return ArmWindow(requests=requests, errors=errors, histogram={bucket_of(0.05): requests})


def _guard(client: TestClient) -> RolloutGuard:
    guard: RolloutGuard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    return guard


def test_the_gate_waits_then_promotes_on_evidence_and_needs_a_key(plane: TestClient) -> None:
    guard = _guard(plane)
    guard.create("orders", actor="a", plan=Plan(steps=(50, 100), min_hold=0, min_sample=1000))
    url = "/api/v1/rollouts/orders/gate"
    assert plane.get(url).status_code == 401
    waiting = plane.get(url, headers=read_headers())
    assert waiting.status_code == 200
    assert (waiting.json()["result"], waiting.json()["passed"]) == ("wait", True)
    for _ in range(40):
        guard.record_window("orders", process="p", control=_window(2000, 20),
                            candidate=_window(2000, 20))  # fmt: skip
    body = plane.get(url, headers=read_headers()).json()
    assert body["result"] == "promote" and body["verdict"]["promotable"] is True
    assert plane.post(url, headers=read_headers()).status_code == 200


def test_the_gate_fails_on_a_regression_and_after_a_rollback(plane: TestClient) -> None:
    guard = _guard(plane)
    guard.create("orders", actor="a", plan=PLAN)
    guard.record_window("orders", process="p", control=_window(100, 1),
                        candidate=_window(100, 40))  # fmt: skip
    url = "/api/v1/rollouts/orders/gate"
    read = plane.get(url, headers=read_headers())
    assert read.status_code == 200
    assert read.json()["result"] == "fail" and "errors regressed" in read.json()["reason"]
    hook = plane.post(url, json={"name": "orders", "phase": "Progressing"},
                      headers=read_headers())  # fmt: skip
    assert hook.status_code == 412 and hook.json()["passed"] is False
    plane.post("/api/v1/rollouts/orders/rollback", headers=admin_headers())
    after = plane.get(url, headers=read_headers()).json()
    assert (after["result"], after["status"]) == ("fail", "rolled_back")
    assert plane.get("/api/v1/rollouts/nope/gate", headers=read_headers()).status_code == 404
