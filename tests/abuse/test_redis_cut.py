"""Redis cut off under a running control plane (through a TCP proxy the test owns; the
shared Redis is never stopped): keyed requests still answer, never 500, and the kill switch
works; when Redis is back the plane uses it again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.abuse.plane import Plane, serve_plane
from tests.conftest import need_service
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis
WRONG_KEY = "ss_" + "r" * 43
REDIS_DB = 11  # a database of its own: failure counts here touch no other test


@pytest.fixture
def cut_plane(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TcpProxy, Plane]]:
    need_service("Redis", "127.0.0.1", 6379)
    proxy = TcpProxy("127.0.0.1", 6379)
    redis_url = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
    try:
        with serve_plane(
            database_url, tmp_path_factory.mktemp("redis-logs"), SAFESHIP_REDIS_URL=redis_url
        ) as served:
            yield proxy, served
    finally:
        proxy.close()


def test_with_redis_cut_keyed_requests_answer_and_the_kill_switch_works(
    cut_plane: tuple[TcpProxy, Plane],
) -> None:
    proxy, plane = cut_plane
    with plane.admin() as admin:
        assert admin.get("/api/v1/me").status_code == 200
        assert admin.post("/api/v1/flags", json={"name": "redis-cut-before"}).status_code == 201
        proxy.cut()
        answers = {
            "me": admin.get("/api/v1/me").status_code,
            "wrong key": admin.get("/api/v1/me", headers={"X-API-Key": WRONG_KEY}).status_code,
            "create": admin.post("/api/v1/flags", json={"name": "redis-cut-during"}).status_code,
            "status": admin.get("/api/v1/status").status_code,
            "kill": admin.post("/api/v1/flags/kill", json={"reason": "redis cut"}).status_code,
        }
        assert answers == {
            "me": 200,
            "wrong key": 401,
            "create": 201,
            "status": 200,
            "kill": 200,
        }, answers
        assert admin.get("/api/v1/flags").json()["killed_at"] is not None
        store = admin.get("/api/v1/status").json()["checks"]["auth_failure_store"][0]
        assert store["status"] == "warn", f"the outage is reported as degraded: {store}"
        proxy.restore()
        assert admin.post("/api/v1/flags/restore", json={}).status_code == 200
        assert admin.get("/api/v1/me").status_code == 200
