"""Races on the control plane: one create of a name wins, the rest are told 409; edits
carry a version, so concurrent edits of one version never silently overwrite each other."""

from __future__ import annotations

import uuid

import httpx

from tests.abuse.concurrency import at_once, described, statuses
from tests.abuse.plane import Plane
from tests.server.support import admin_headers

RACERS = 20


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _post(path: str, body: dict[str, object]) -> list:  # type: ignore[type-arg]
    return [lambda c, b=body: c.post(path, json=b) for _ in range(RACERS)]


def test_twenty_concurrent_creates_of_one_flag_give_one_201_and_nineteen_409(
    plane: Plane,
) -> None:
    name = _unique("race-flag")
    responses = at_once(plane.url, admin_headers(), _post("/api/v1/flags", {"name": name}))
    assert statuses(responses) == [201] + [409] * (RACERS - 1), described(responses)
    with plane.admin() as client:
        assert client.get(f"/api/v1/flags/{name}").status_code == 200


def test_twenty_concurrent_creates_of_one_rollout_give_one_201_and_nineteen_409(
    plane: Plane,
) -> None:
    name = _unique("race-rollout")
    body: dict[str, object] = {
        "name": name,
        "plan": {"steps": [10, 100], "min_hold": 0, "min_sample": 0},
    }
    responses = at_once(plane.url, admin_headers(), _post("/api/v1/rollouts", body))
    assert statuses(responses) == [201] + [409] * (RACERS - 1), described(responses)


def test_twenty_concurrent_creates_of_one_key_give_one_201_and_nineteen_409(
    plane: Plane,
) -> None:
    name = _unique("race-key")
    body: dict[str, object] = {"name": name, "scope": "read"}
    responses = at_once(plane.url, admin_headers(), _post("/api/v1/keys", body))
    assert statuses(responses) == [201] + [409] * (RACERS - 1), described(responses)
    created = [r.json()["key"] for r in responses if r.status_code == 201]
    with httpx.Client(base_url=plane.url, headers={"X-API-Key": created[0]}) as client:
        assert client.get("/api/v1/me").json()["name"] == name


def test_concurrent_puts_of_one_version_keep_exactly_one_edit(plane: Plane) -> None:
    name = _unique("race-put")
    with plane.admin() as client:
        version = client.post("/api/v1/flags", json={"name": name}).json()["version"]

    def edit(index: int) -> object:
        body = {"description": f"edit {index}", "version": version}
        headers = {"If-Match": f'"{version}"'}
        return lambda c: c.put(f"/api/v1/flags/{name}", json=body, headers=headers)

    responses = at_once(plane.url, admin_headers(), [edit(i) for i in range(10)])  # type: ignore[misc]
    won = [r for r in responses if r.status_code == 200]
    lost = [r for r in responses if r.status_code != 200]
    assert len(won) == 1, [(r.status_code, r.text) for r in responses]
    assert {r.status_code for r in lost} <= {409, 412}, [(r.status_code, r.text) for r in lost]
    with plane.admin() as client:
        stored = client.get(f"/api/v1/flags/{name}").json()
    assert stored["description"] == won[0].json()["description"]
    assert stored["version"] != version


def test_a_put_with_a_stale_version_is_refused_and_changes_nothing(plane: Plane) -> None:
    name = _unique("stale-put")
    with plane.admin() as client:
        version = client.post("/api/v1/flags", json={"name": name}).json()["version"]
        fresh = client.put(
            f"/api/v1/flags/{name}",
            json={"description": "first", "version": version},
            headers={"If-Match": f'"{version}"'},
        )
        assert fresh.status_code == 200, fresh.text
        stale = client.put(
            f"/api/v1/flags/{name}",
            json={"description": "second", "version": version},
            headers={"If-Match": f'"{version}"'},
        )
        assert stale.status_code in (409, 412), stale.text
        assert client.get(f"/api/v1/flags/{name}").json()["description"] == "first"


def test_concurrent_actions_on_one_rollout_version_make_one_transition(plane: Plane) -> None:
    name = _unique("race-advance")
    body = {"name": name, "plan": {"steps": [10, 50, 100], "min_hold": 0, "min_sample": 0}}
    with plane.admin() as client:
        version = client.post("/api/v1/rollouts", json=body).json()["version"]
    advance = {"version": version, "reason": "race"}
    sends = [lambda c: c.post(f"/api/v1/rollouts/{name}/advance", json=advance)] * 10
    responses = at_once(plane.url, admin_headers(), sends)
    assert statuses(responses) == [200] + [409] * 9, described(responses)
    with plane.admin() as client:
        assert client.get(f"/api/v1/rollouts/{name}").json()["step"] == 1


def test_concurrent_deletes_revokes_and_first_writes_never_answer_5xx(plane: Plane) -> None:
    flag, key, breaker = _unique("race-del"), _unique("race-rev"), _unique("race-brk")
    with plane.admin() as client:
        assert client.post("/api/v1/flags", json={"name": flag}).status_code == 201
        assert client.post("/api/v1/keys", json={"name": key, "scope": "read"}).status_code == 201
    state = {"version": 1, "features": [{"name": _unique("race-imp"), "enabled": True}]}
    groups = {
        "delete flag": (lambda c: c.delete(f"/api/v1/flags/{flag}"), {204, 404}),
        "revoke key": (lambda c: c.post(f"/api/v1/keys/{key}/revoke", json={}), {204, 404}),
        "first breaker mode": (
            lambda c: c.post(f"/api/v1/breakers/svc/{breaker}/mode", json={"mode": "disabled"}),
            {200, 409},
        ),
        "import one state": (lambda c: c.post("/api/v1/flags/import", json=state), {200, 409}),
    }
    wrong = {}
    for label, (send, allowed) in groups.items():
        responses = at_once(plane.url, admin_headers(), [send] * RACERS)
        answered = [r.status_code for r in responses]
        once = label in ("delete flag", "revoke key")  # one of them did it, the rest 404
        if not set(answered) <= allowed or (once and answered.count(min(allowed)) != 1):
            wrong[label] = described(responses)
    assert not wrong, wrong
