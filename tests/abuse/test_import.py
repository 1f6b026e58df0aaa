"""A malformed flag import is refused whole: the API keeps answering, and flag clients (new
and running) keep serving and stay healthy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from safeship.db import create_engine
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
from tests.abuse.invalid import invalid_problems
from tests.abuse.plane import Plane

BAD_STATES = {
    "constraints not a list": {
        "version": 1,
        "features": [],
        "segments": [{"id": 1, "name": "s", "constraints": "oops"}],
    },
    "segment without an id": {
        "version": 1,
        "features": [],
        "segments": [{"name": "s", "constraints": []}],
    },
    "strategy names an unknown segment": {
        "version": 1,
        "features": [{"name": "f-x", "strategies": [{"name": "default", "segments": [7]}]}],
    },
    "constraint without an operator": {
        "version": 1,
        "features": [
            {
                "name": "f-y",
                "strategies": [{"name": "default", "constraints": [{"contextName": "userId"}]}],
            }
        ],
    },
}


@pytest.fixture
def store(plane: Plane) -> Iterator[FlagStore]:
    engine = create_engine(plane.env["SAFESHIP_DATABASE_URL"])
    yield FlagStore(engine)
    engine.dispose()


def test_a_malformed_import_is_refused_and_leaves_the_api_and_clients_healthy(
    plane: Plane, store: FlagStore
) -> None:
    name = f"imp-{uuid.uuid4().hex[:8]}"
    with plane.admin() as client, FlagClient(store=store, poll_interval=0.1) as running:
        assert client.post("/api/v1/flags", json={"name": name}).status_code == 201
        assert client.post(f"/api/v1/flags/{name}/enable", json={}).status_code == 200
        for label, state in BAD_STATES.items():
            answer = client.post("/api/v1/flags/import", json=state)
            assert answer.status_code == 422, (label, answer.status_code, answer.text[:300])
            invalid_problems(answer)
        assert client.get("/api/v1/flags").status_code == 200
        evaluated = client.post("/api/v1/flags/evaluate", json={"name": name, "context": {}})
        assert evaluated.status_code == 200 and evaluated.json()["enabled"] is True
        running.refresh(force=True)
        assert running.health()[0] == "pass", running.health()
        assert running.is_enabled(name)
        with FlagClient(store=store, poll_interval=60) as fresh:
            assert fresh.health()[0] == "pass", fresh.health()
            assert fresh.is_enabled(name)
