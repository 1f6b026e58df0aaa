"""The HTTP contract of the Unleash client/frontend APIs and OFREP on the control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from safeship.db._engine import create_engine
from safeship.flags.store import FlagStore
from safeship.server import create_app
from tests.reach.conftest import FRONTEND_KEY, plane_settings
from tests.server.support import ADMIN_KEY, READ_KEY

SEGMENT = {
    "id": 7,
    "name": "beta",
    "constraints": [{"contextName": "plan", "operator": "IN", "values": ["beta"]}],
}


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, FlagStore]]:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    app = create_app(plane_settings(url), engine=engine)  # type: ignore[arg-type]
    store = FlagStore(engine)
    store.import_unleash(
        {
            "version": 1,
            "segments": [SEGMENT],
            "features": [
                {
                    "name": "pay.parent",
                    "enabled": True,
                    "project": "payments",
                    "strategies": [{"name": "default", "segments": [7]}],
                },
                {
                    "name": "pay.child",
                    "enabled": True,
                    "project": "payments",
                    "strategies": [{"name": "default"}],
                    "dependencies": [{"feature": "pay.parent"}],
                },
                {
                    "name": "search",
                    "enabled": True,
                    "strategies": [{"name": "default"}],
                    "variants": [
                        {
                            "name": "big",
                            "weight": 1000,
                            "weightType": "variable",
                            "payload": {"type": "json", "value": '{"size": 3}'},
                        }
                    ],
                },
                {"name": "dark", "enabled": False, "strategies": [{"name": "default"}]},
            ],
        },
        actor="test",
    )
    with TestClient(app) as client:
        yield client, store
    engine.dispose()


def features(client: TestClient, **params: Any) -> Any:
    response = client.get(
        "/api/client/features", params=params, headers={"Authorization": READ_KEY}
    )
    assert response.status_code == 200, response.text
    return response


def test_client_features_serve_segments_and_dependencies_as_unleash_does(
    http: tuple[TestClient, FlagStore],
) -> None:
    client, _ = http
    body = features(client).json()
    by_name = {f["name"]: f for f in body["features"]}
    assert body["version"] == 2 and body["segments"] == [SEGMENT]
    assert by_name["pay.parent"]["strategies"][0]["segments"] == [7]
    assert by_name["pay.child"]["dependencies"] == [{"feature": "pay.parent"}]
    assert (
        by_name["pay.child"]["project"] == "payments" and by_name["search"]["project"] == "default"
    )
    assert "dependencies" not in by_name["search"]


def feature_names(response: Any) -> list[str]:
    return sorted(f["name"] for f in response.json()["features"])


def test_client_features_filter_by_project_and_name_prefix(
    http: tuple[TestClient, FlagStore],
) -> None:
    client, _ = http
    names = feature_names
    assert names(features(client, project="payments")) == ["pay.child", "pay.parent"]
    assert names(features(client, namePrefix="se")) == ["search"]
    assert names(features(client, project=["default", "payments"], namePrefix="pay.c")) == [
        "pay.child"
    ]
    assert features(client, project="payments").headers["ETag"] != features(client).headers["ETag"]


def test_client_features_answer_304_until_a_flag_changes(
    http: tuple[TestClient, FlagStore],
) -> None:
    client, store = http
    etag = features(client).headers["ETag"]
    again = client.get(
        "/api/client/features", headers={"Authorization": READ_KEY, "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.headers["ETag"] == etag and again.content == b""
    store.set_enabled("dark", True, actor="test")
    feed = client.app.state.flag_feed  # type: ignore[attr-defined]
    feed._client.refresh()  # what the feed's thread does within its poll interval
    changed = client.get(
        "/api/client/features", headers={"Authorization": READ_KEY, "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert {f["name"]: f["enabled"] for f in changed.json()["features"]}["dark"] is True


@pytest.mark.parametrize(
    "path",
    ["/api/client/features", "/api/client/streaming", "/api/frontend", "/api/v1/sdk/clients"],
)
def test_sdk_routes_refuse_missing_and_wrong_keys(
    http: tuple[TestClient, FlagStore], path: str
) -> None:
    client, _ = http
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "ss_wrong"}).status_code == 401


def test_a_frontend_key_reaches_only_the_frontend_api(http: tuple[TestClient, FlagStore]) -> None:
    client, _ = http
    key = {"Authorization": FRONTEND_KEY}
    assert client.get("/api/frontend", headers=key).status_code == 200
    assert client.get("/api/client/features", headers=key).status_code == 403
    assert client.get("/api/client/streaming", headers=key).status_code == 403
    assert client.post("/ofrep/v1/evaluate/flags", headers=key, json={}).status_code == 403
    assert client.get("/api/v1/flags", headers={"X-API-Key": FRONTEND_KEY}).status_code == 403
    assert client.get("/api/v1/me", headers={"X-API-Key": FRONTEND_KEY}).status_code == 403


def test_frontend_api_lists_the_flags_on_for_the_context(
    http: tuple[TestClient, FlagStore],
) -> None:
    client, _ = http
    key = {"Authorization": FRONTEND_KEY}
    plain = client.get("/api/frontend", headers=key).json()["toggles"]
    assert sorted(t["name"] for t in plain) == ["search"]  # the segment wants plan=beta
    beta = client.get("/api/frontend", params={"properties[plan]": "beta"}, headers=key).json()
    assert sorted(t["name"] for t in beta["toggles"]) == ["pay.child", "pay.parent", "search"]
    posted = client.post("/api/frontend", headers=key, json={"context": {"plan": "beta"}}).json()
    assert posted == beta
    etag = client.get("/api/frontend", headers=key).headers["ETag"]
    cached = client.get("/api/frontend", headers={**key, "If-None-Match": etag})
    assert cached.status_code == 304
    other = client.get("/api/frontend?userId=9", headers={**key, "If-None-Match": etag})
    assert other.status_code == 200  # another context, another answer
    search = next(t for t in plain if t["name"] == "search")
    assert search["variant"]["name"] == "big" and search["variant"]["payload"]["type"] == "json"


def test_register_and_metrics_are_recorded(http: tuple[TestClient, FlagStore]) -> None:
    client, store = http
    key = {"Authorization": READ_KEY}
    registration = {
        "appName": "shop",
        "instanceId": "i-1",
        "sdkVersion": "unleash-node:6",
        "strategies": ["default"],
        "started": "2026-01-01T00:00:00Z",
        "interval": 15000,
        "platformName": "node",
    }
    assert client.post("/api/client/register", headers=key, json=registration).status_code == 202
    metrics = {
        "appName": "shop",
        "instanceId": "i-1",
        "bucket": {
            "start": "2026-01-01T00:00:00Z",
            "stop": "2026-01-01T00:01:00Z",
            "toggles": {
                "search": {"yes": 3, "no": 1, "variants": {"big": 3}},
                "not-a-flag": {"yes": 1, "no": 0},
            },
        },
    }
    assert client.post("/api/client/metrics", headers=key, json=metrics).status_code == 202
    assert store.get("search").last_evaluated_at is not None
    assert store.get("dark").last_evaluated_at is None
    (listed,) = client.get("/api/v1/sdk/clients", headers=key).json()
    assert (listed["app_name"], listed["sdk_version"], listed["evaluations"]) == (
        "shop",
        "unleash-node:6",
        5,
    )
    bad = client.post(
        "/api/client/metrics",
        headers=key,
        json={"appName": "shop", "bucket": {"toggles": {"search": {"yes": -1}}}},
    )
    assert bad.status_code == 422


def ofrep(client: TestClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(
        f"/ofrep/v1/evaluate/flags{path}",
        headers={"Authorization": READ_KEY, **headers},
        content=body if isinstance(body, bytes) else None,
        json=None if isinstance(body, bytes) else body,
    )


def test_ofrep_single_evaluation_shapes(http: tuple[TestClient, FlagStore]) -> None:
    client, _ = http
    on = ofrep(client, "/search", {"context": {"targetingKey": "u1"}})
    assert on.status_code == 200
    assert on.json() == {
        "key": "search",
        "reason": "SPLIT",
        "variant": "big",
        "value": {"size": 3},
        "metadata": {"enabled": True, "version": 1},
    }
    off = ofrep(client, "/dark", {}).json()
    assert (off["value"], off["reason"], off["variant"]) == (False, "DISABLED", "off")
    beta = ofrep(client, "/pay.child", {"context": {"targetingKey": "u1", "plan": "beta"}})
    assert beta.json()["value"] is True and beta.json()["reason"] == "TARGETING_MATCH"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/nope", {}, 404, "FLAG_NOT_FOUND"),
        ("/search", b"{not json", 400, "PARSE_ERROR"),
        ("/search", b"[1, 2]", 400, "PARSE_ERROR"),
        ("/search", {"context": "u1"}, 400, "INVALID_CONTEXT"),
        ("/search", {"context": {"targetingKey": 7}}, 400, "INVALID_CONTEXT"),
        ("/search", {"context": {"plan": {"nested": 1}}}, 400, "INVALID_CONTEXT"),
    ],
)
def test_ofrep_errors_use_the_protocol_codes(
    http: tuple[TestClient, FlagStore], path: str, body: Any, status: int, code: str
) -> None:
    client, _ = http
    response = ofrep(client, path, body)
    assert response.status_code == status
    assert response.json() == {
        "key": path[1:],
        "errorCode": code,
        "errorDetails": response.json()["errorDetails"],
    }


def test_ofrep_refuses_missing_keys(http: tuple[TestClient, FlagStore]) -> None:
    client, _ = http
    assert client.post("/ofrep/v1/evaluate/flags/search", json={}).status_code == 401
    assert client.post("/ofrep/v1/evaluate/flags", json={}).status_code == 401


def test_ofrep_bulk_evaluation_has_an_etag(http: tuple[TestClient, FlagStore]) -> None:
    client, _ = http
    body = {"context": {"targetingKey": "u1", "plan": "beta"}}
    first = ofrep(client, "", body)
    assert first.status_code == 200
    assert sorted(f["key"] for f in first.json()["flags"]) == [
        "dark",
        "pay.child",
        "pay.parent",
        "search",
    ]
    cached = ofrep(client, "", body, **{"If-None-Match": first.headers["ETag"]})
    assert cached.status_code == 304
    other = ofrep(
        client, "", {"context": {"targetingKey": "u2"}}, **{"If-None-Match": first.headers["ETag"]}
    )
    assert other.status_code == 200  # another context, another answer
    assert ofrep(client, "", b"nope").json()["errorCode"] == "PARSE_ERROR"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/client/features"), ("POST", "/ofrep/v1/evaluate/flags/search")],
)
def test_sdk_routes_share_the_brute_force_limit(
    http: tuple[TestClient, FlagStore], method: str, path: str
) -> None:
    """Bad keys on the SDK routes count like anywhere else: after 5 a minute, 429."""
    client, _ = http
    statuses = [
        client.request(method, path, headers={"Authorization": f"ss_guess_{n}"}).status_code
        for n in range(7)
    ]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    refused = client.request(method, path, headers={"Authorization": READ_KEY})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_a_frontend_key_created_through_the_api_reaches_the_frontend_api(
    http: tuple[TestClient, FlagStore],
) -> None:
    client, _ = http
    admin = {"X-API-Key": ADMIN_KEY}
    created = client.post("/api/v1/keys", headers=admin, json={"name": "web", "scope": "frontend"})
    assert created.status_code == 201, created.text
    key = {"Authorization": created.json()["key"]}
    assert client.get("/api/frontend", headers=key).status_code == 200
    assert client.get("/api/client/features", headers=key).status_code == 403
    bearer = {"Authorization": f"Bearer {created.json()['key']}"}
    assert client.post("/api/v1/flags/dark/enable", headers=bearer, json={}).status_code == 403


def test_sdk_routes_answer_503_not_an_empty_flag_set_before_flags_load(tmp_path: Path) -> None:
    """With the store unreachable from the start, SDKs must keep their flags: 503."""
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    app = create_app(plane_settings(url), engine=engine)  # type: ignore[arg-type]
    (tmp_path / "plane.db").unlink()  # the store is gone before the first SDK request
    engine.dispose()
    (tmp_path / "plane.db").mkdir()  # and cannot be recreated in its place
    with TestClient(app) as client:
        key = {"Authorization": READ_KEY}
        answer = client.get("/api/client/features", headers=key)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert "flags not loaded yet" in answer.json()["detail"]
        assert client.post("/ofrep/v1/evaluate/flags", headers=key, json={}).status_code == 503
    app.state.flag_feed.close()
