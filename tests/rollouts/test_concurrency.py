"""Rollouts under concurrent writers (SQLite and PostgreSQL, through the real API).

Twenty requests released at once by a barrier: creating one rollout gives one 201 and
409s; rolling back, promoting, or advancing from one version gives one transition and
409s; a rollback racing advances always ends rolled back with the flag off.  Never a 500.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient

from safeship.rollouts import RolloutGuard
from tests.server.support import admin_headers, read_headers

RACERS = 20
STEPS = [5.0 * i for i in range(1, 21)]
PLAN = {"steps": STEPS, "min_hold": 0, "min_sample": 0}


def race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every call at the same moment on its own thread; their responses in order."""
    barrier = threading.Barrier(len(calls))
    responses: list[httpx.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        responses[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in responses)
    return [r for r in responses if r is not None]


def post(client: TestClient, path: str, body: dict[str, Any] | None = None) -> Callable[[], Any]:
    return lambda: client.post(path, json=body, headers=admin_headers())


def codes(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def kinds(client: TestClient, name: str) -> Counter[str]:
    detail = client.get(f"/api/v1/rollouts/{name}", headers=read_headers()).json()
    return Counter(d["kind"] for d in detail["decisions"])


def guard(client: TestClient) -> RolloutGuard:
    found: RolloutGuard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    return found


def create(client: TestClient, name: str = "orders", **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/rollouts", json={"name": name, "plan": PLAN, **extra}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_concurrent_creation_of_one_rollout_gives_one_201_and_409s(plane: TestClient) -> None:
    body = {"name": "orders", "plan": PLAN}
    responses = race([post(plane, "/api/v1/rollouts", body)] * RACERS)
    assert codes(responses) == {201: 1, 409: RACERS - 1}, [r.text for r in responses]
    assert all("exists already" in r.json()["detail"] for r in responses if r.status_code == 409)
    assert kinds(plane, "orders") == {"started": 1}
    assert plane.get("/api/v1/flags/orders", headers=read_headers()).json()["enabled"] is True


def test_concurrent_rollbacks_give_one_transition(plane: TestClient) -> None:
    create(plane)
    responses = race([post(plane, "/api/v1/rollouts/orders/rollback")] * RACERS)
    assert codes(responses) == {200: 1, 409: RACERS - 1}, [r.text for r in responses]
    assert kinds(plane, "orders") == {"started": 1, "rolled_back": 1}
    assert guard(plane).get("orders").version == 2


def test_concurrent_promotes_give_one_transition(plane: TestClient) -> None:
    create(plane, mode="shadow")
    responses = race([post(plane, "/api/v1/rollouts/orders/promote")] * RACERS)
    assert codes(responses) == {200: 1, 409: RACERS - 1}, [r.text for r in responses]
    assert kinds(plane, "orders") == {"started": 1, "promoted": 1}
    assert guard(plane).get("orders").mode == "canary"


def test_concurrent_advances_from_one_version_give_one_step(plane: TestClient) -> None:
    version = create(plane)["version"]
    body = {"reason": "looks good", "version": version}
    responses = race([post(plane, "/api/v1/rollouts/orders/advance", body)] * RACERS)
    assert codes(responses) == {200: 1, 409: RACERS - 1}, [r.text for r in responses]
    assert kinds(plane, "orders") == {"started": 1, "advanced": 1}
    assert guard(plane).get("orders").step == 1


def test_concurrent_advances_without_a_version_are_one_step_each(plane: TestClient) -> None:
    create(plane)
    responses = race([post(plane, "/api/v1/rollouts/orders/advance")] * 10)
    counted = codes(responses)
    assert set(counted) <= {200, 409} and counted[200] >= 1, [r.text for r in responses]
    record = guard(plane).get("orders")
    assert kinds(plane, "orders")["advanced"] == counted[200] == record.step
    steps = sorted(r.json()["step"] for r in responses if r.status_code == 200)
    assert steps == list(range(1, counted[200] + 1))  # never two advances from one step
    flag = plane.get("/api/v1/flags/orders", headers=read_headers()).json()
    assert flag["rollout_percent"] == STEPS[record.step]


def test_a_rollback_racing_advances_ends_rolled_back_with_the_flag_off(
    plane: TestClient,
) -> None:
    create(plane)
    calls = [post(plane, "/api/v1/rollouts/orders/advance")] * 9
    calls.insert(4, post(plane, "/api/v1/rollouts/orders/rollback"))
    responses = race(calls)
    assert responses[4].status_code == 200, responses[4].text
    assert set(codes(responses)) <= {200, 409}
    assert guard(plane).get("orders").status == "rolled_back"
    assert plane.get("/api/v1/flags/orders", headers=read_headers()).json()["enabled"] is False
    assert kinds(plane, "orders")["rolled_back"] == 1


def test_concurrent_emergencies_roll_each_rollout_back_once_and_all_complete(
    plane: TestClient,
) -> None:
    for name in ("billing", "orders", "search"):
        create(plane, name)
    body = {"confirm": "ROLLBACK", "reason": "drill"}
    responses = race([post(plane, "/api/v1/rollouts/emergency", body)] * 5)
    assert codes(responses) == {200: 5}, [r.text for r in responses]
    assert all(r.json()["complete"] for r in responses)
    rolled = Counter(name for r in responses for name in r.json()["rolled_back"])
    assert rolled == dict.fromkeys(("billing", "orders", "search"), 1)
    for name in ("billing", "orders", "search"):
        assert kinds(plane, name)["rolled_back"] == 1
