"""Control-plane API: probes, key auth and scopes, audited key management."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from safeship.server import create_app
from safeship.settings import load_settings
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, read_headers
from tests.support.tcp_proxy import TcpProxy


def test_liveness_and_readiness_answer_health_json(client: TestClient) -> None:
    live = client.get("/health")
    ready = client.get("/health/ready")
    assert live.status_code == 200 and ready.status_code == 200
    assert live.headers["content-type"].startswith("application/health+json")
    assert ready.json()["status"] == "pass"
    assert ready.json()["checks"]["database"][0]["status"] == "pass"


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text


@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/audit", "/api/v1/status", "/api/v1/keys"])
def test_protected_routes_need_a_key(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "wrong"},
        {"X-API-Key": READ_KEY + "x"},
        {"X-API-Key": READ_KEY[:-1]},
        {"Authorization": ("Bearer " + "é" * 40).encode()},
        {"X-API-Key": "k" * 5000},
    ],
)
def test_invalid_keys_are_401_never_500(client: TestClient, headers: dict[str, object]) -> None:
    assert client.get("/api/v1/me", headers=headers).status_code == 401  # type: ignore[arg-type]


def test_keys_identify_their_holder_and_scope(client: TestClient) -> None:
    assert client.get("/api/v1/me", headers=read_headers()).json() == {
        "name": "reader",
        "scope": "read",
    }
    assert client.get("/api/v1/me", headers=admin_headers()).json() == {
        "name": "operator",
        "scope": "admin",
    }


def test_read_scope_cannot_write(client: TestClient) -> None:
    response = client.post(
        "/api/v1/keys", json={"name": "x", "scope": "read"}, headers=read_headers()
    )
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "this action needs the admin scope"}
    assert client.get("/api/v1/keys", headers=read_headers()).status_code == 403


def test_created_key_works_is_audited_and_revocation_ends_it(client: TestClient) -> None:
    created = client.post(
        "/api/v1/keys",
        json={"name": "ci-bot", "scope": "read", "reason": "for the pipeline"},
        headers=admin_headers(),
    )
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert client.get("/api/v1/me", headers={"X-API-Key": new_key}).json()["name"] == "ci-bot"
    listed = client.get("/api/v1/keys", headers=admin_headers()).json()
    assert (
        listed[0]["name"] == "ci-bot" and "digest" not in listed[0] and new_key not in str(listed)
    )

    duplicate = client.post(
        "/api/v1/keys", json={"name": "ci-bot", "scope": "admin"}, headers=admin_headers()
    )
    assert duplicate.status_code == 409

    revoked = client.post(
        "/api/v1/keys/ci-bot/revoke", json={"reason": "rotated"}, headers=admin_headers()
    )
    assert revoked.status_code == 204
    assert client.get("/api/v1/me", headers={"X-API-Key": new_key}).status_code == 401
    assert (
        client.post("/api/v1/keys/ci-bot/revoke", json={}, headers=admin_headers()).status_code
        == 404
    )

    trail = client.get("/api/v1/audit", headers=read_headers()).json()["items"]
    assert [(e["action"], e["actor"], e["reason"]) for e in trail] == [
        ("key.revoke", "key:operator", "rotated"),
        ("key.create", "key:operator", "for the pipeline"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "scope": "read"},
        {"name": "a b", "scope": "read"},
        {"name": "x", "scope": "root"},
        {"name": "x" * 101, "scope": "read"},
        {},
    ],
)
def test_bad_key_requests_are_422_with_the_field(client: TestClient, body: dict[str, str]) -> None:
    response = client.post("/api/v1/keys", json=body, headers=admin_headers())
    assert response.status_code == 422
    assert response.json()["error"] == "invalid"
    assert all("field" in p for p in response.json()["detail"])


def test_audit_limit_is_bounded(client: TestClient) -> None:
    assert client.get("/api/v1/audit?limit=501", headers=read_headers()).status_code == 422
    assert client.get("/api/v1/audit?limit=0", headers=read_headers()).status_code == 422


def test_openapi_schema_is_published_with_security(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    assert "/api/v1/keys" in schema["paths"]
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])


def test_settings_keys_are_never_returned(client: TestClient) -> None:
    for path in ("/api/v1/keys", "/api/v1/status", "/api/v1/audit"):
        text = client.get(path, headers=admin_headers()).text
        assert READ_KEY not in text and ADMIN_KEY not in text


def test_repeated_bad_keys_are_limited_with_retry_after(client: TestClient) -> None:
    statuses = [
        client.get("/api/v1/me", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(7)
    ]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    limited = client.get("/api/v1/me", headers=read_headers())
    assert limited.status_code == 429  # even a right key waits out the window
    assert int(limited.headers["retry-after"]) > 0


@pytest.mark.redis
def test_a_redis_outage_keeps_keys_and_the_kill_switch_working(
    redis_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    settings = load_settings(
        {
            "SAFESHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'plane.db'}",
            "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
            "SAFESHIP_SESSION_SECRET": "test-session-secret-Zq8Wv3Nr7Tb2Lk9Mx4",
            "SAFESHIP_HEALTH_CACHE_SECONDS": "0",
            "SAFESHIP_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        }
    )
    try:
        with TestClient(create_app(settings)) as client:
            assert store_health(client) == "pass"
            proxy.cut()
            assert client.get("/api/v1/me", headers=read_headers()).status_code == 200
            killed = client.post(
                "/api/v1/flags/kill", json={"reason": "incident"}, headers=admin_headers()
            )
            assert killed.status_code == 200
            bad = [
                client.get("/api/v1/me", headers={"X-API-Key": f"guess-{n}"}).status_code
                for n in range(6)
            ]
            assert bad == [401] * 5 + [429]  # still limited, in this process
            ready = client.get("/health/ready")
            assert (ready.status_code, ready.json()["status"]) == (200, "warn")
            assert store_health(client) == "warn"
            proxy.restore()
            deadline = time.monotonic() + 20  # the store tries Redis again every 5 s
            while store_health(client) != "pass" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert store_health(client) == "pass"
    finally:
        proxy.close()


def store_health(client: TestClient) -> str:
    status: str = client.get("/health/ready").json()["checks"]["auth_failure_store"][0]["status"]
    return status
