"""A database that goes away while serving: readiness fails, liveness holds, requests fail fast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from safeship.db import create_engine
from safeship.server import create_app
from tests.conftest import need_service
from tests.server.support import make_settings, read_headers
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[TcpProxy, TestClient]]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    proxy = TcpProxy("127.0.0.1", 5432)
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine)
    with TestClient(app) as client:
        yield proxy, client
    engine.dispose()
    proxy.close()


def test_outage_turns_readiness_503_and_requests_fail_fast(
    proxied: tuple[TcpProxy, TestClient],
) -> None:
    proxy, client = proxied
    assert client.get("/health/ready").status_code == 200
    assert client.get("/api/v1/audit", headers=read_headers()).status_code == 200

    proxy.cut()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"][0]["status"] == "fail"
    assert client.get("/health").status_code == 200

    started = time.monotonic()
    response = client.get("/api/v1/audit", headers=read_headers())
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert response.headers["retry-after"] == "5"
    assert elapsed < 5.0, f"a request during the outage took {elapsed:.1f}s"

    proxy.restore()
    assert client.get("/health/ready").status_code == 200
    assert client.get("/api/v1/audit", headers=read_headers()).status_code == 200
