"""The HTTP edge against real servers: ``safeship serve`` (the control plane as an
operator runs it) and a `protect()` app under uvicorn with its default options, which
rewrite the client from ``X-Forwarded-For`` for requests from 127.0.0.1.

Body limits: oversized bodies are refused before they are read and before any key is
checked, on every route, and the server's memory stays bounded. Client addresses: proxy
headers count only from the proxies named in settings, so a client on 127.0.0.1 can
neither escape the brute-force limit by rotating them nor lock out the address it names
(127.0.0.2 here: any 127.0.0.0/8 address is this machine).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.support import ADMIN_KEY, READ_KEY
from tests.support.tcp_proxy import TcpProxy
from tests.web.raw_http import chunked_body, declared_body
from tests.web.server_process import Served, rss_bytes, serve, serve_plane

pytestmark = pytest.mark.slow

VICTIM = "127.0.0.2"
MIB = 1_048_576


def plane_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SAFESHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'plane.db'}",
        "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
        "SAFESHIP_SESSION_SECRET": "test-session-secret-Zq8Wv3Nr7Tb2Lk9Mx4",
        "SAFESHIP_LOG_FORMAT": "json",
        "SAFESHIP_LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Served]:
    with serve_plane(plane_env(tmp_path), tmp_path / "plane.log") as served:
        yield served


@pytest.fixture
def trusting_plane(tmp_path: Path) -> Iterator[Served]:
    env = plane_env(tmp_path, SAFESHIP_TRUSTED_PROXIES="127.0.0.1")
    with serve_plane(env, tmp_path / "plane.log") as served:
        yield served


def from_address(address: str, url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=10
    )


def access_clients(log: Path, path: str) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [
        line["client"]
        for line in lines
        if line.get("event") == "http.request" and line.get("path") == path
    ]


# -- body limits ------------------------------------------------------------------


ROUTES = [
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/api/v1/flags"),
    ("PUT", "/api/v1/flags/checkout"),
    ("POST", "/api/v1/flags/kill"),
    ("POST", "/api/v1/flags/import"),
    ("POST", "/api/v1/no-such-route"),
    ("GET", "/health"),
]


def test_declared_oversized_bodies_get_413_before_auth_on_every_route(plane: Served) -> None:
    before = rss_bytes(plane.process.pid)
    statuses = {
        f"{method} {path}": declared_body(plane.port, path, method=method, sent=MIB)
        for method, path in ROUTES
    }
    assert statuses == dict.fromkeys(statuses, 413)
    grown = rss_bytes(plane.process.pid) - before
    assert grown < 40 * MIB, f"RSS grew by {grown / MIB:.0f} MiB for {len(ROUTES)} requests"
    assert httpx.get(plane.url + "/health").status_code == 200


def test_chunked_bodies_are_cut_at_the_limit(plane: Served) -> None:
    before = rss_bytes(plane.process.pid)
    for path, kind in (
        ("/login", "application/x-www-form-urlencoded"),
        ("/api/v1/flags", "application/json"),
        ("/api/v1/flags/import", "application/json"),
    ):
        status, sent = chunked_body(plane.port, path, most=64 * MIB, headers={"Content-Type": kind})
        assert status == 413, path
        # What went out before the answer: the limit (8 MiB on the import route) plus
        # what the kernel's socket buffers held, far from the 64 MiB on offer.
        assert sent < 32 * MIB, f"{path}: {sent / MIB:.0f} MiB sent before the answer"
    grown = rss_bytes(plane.process.pid) - before
    assert grown < 60 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"


def test_the_import_route_takes_bodies_up_to_its_own_limit(plane: Served) -> None:
    body = {"version": 1, "features": [], "padding": "x" * (2 * MIB)}
    with httpx.Client(base_url=plane.url, headers={"X-API-Key": ADMIN_KEY}) as admin:
        imported = admin.post("/api/v1/flags/import", json=body)
        created = admin.post("/api/v1/flags", json=body)
    assert imported.status_code != 413
    assert created.status_code == 413
    assert created.json()["title"] == "Content Too Large"


# -- client addresses under safeship serve -------------------------------------------


def test_serve_ignores_rotated_proxy_headers_and_protects_the_named_address(
    plane: Served,
) -> None:
    statuses = []
    with httpx.Client(base_url=plane.url, timeout=10) as attacker:
        for n in range(25):
            headers = {
                "X-API-Key": f"guess-{n}",
                "X-Forwarded-For": VICTIM if n % 2 else f"198.51.100.{n}",
                "X-Real-IP": f"198.51.101.{n}",
                "Forwarded": f"for=198.51.102.{n}",
            }
            statuses.append(attacker.get("/api/v1/flags", headers=headers).status_code)
        limited = attacker.get("/api/v1/flags", headers={"X-API-Key": READ_KEY})
    assert statuses == [401] * 5 + [429] * 20
    assert limited.status_code == 429
    with from_address(VICTIM, plane.url) as victim:
        assert victim.get("/api/v1/flags", headers={"X-API-Key": READ_KEY}).status_code == 200


def test_serve_logs_the_peer_not_a_forwarded_address(plane: Served, tmp_path: Path) -> None:
    httpx.get(plane.url + "/api/v1/flags", headers={"X-Forwarded-For": "198.51.100.1"})
    with from_address(VICTIM, plane.url) as other:
        other.get("/api/v1/flags", headers={"X-Forwarded-For": "198.51.100.2"})
    _wait_for_lines(tmp_path / "plane.log", "/api/v1/flags", 2)
    assert access_clients(tmp_path / "plane.log", "/api/v1/flags") == ["127.0.0.1", VICTIM]


def test_serve_uses_the_forwarded_address_from_a_trusted_proxy(
    trusting_plane: Served, tmp_path: Path
) -> None:
    with httpx.Client(base_url=trusting_plane.url, timeout=10) as proxy:
        for n in range(6):
            headers = {"X-API-Key": f"guess-{n}", "X-Forwarded-For": "198.51.100.7"}
            proxy.get("/api/v1/flags", headers=headers)
        same = proxy.get(
            "/api/v1/flags", headers={"X-API-Key": READ_KEY, "X-Forwarded-For": "198.51.100.7"}
        )
        other = proxy.get(
            "/api/v1/flags", headers={"X-API-Key": READ_KEY, "X-Forwarded-For": "198.51.100.8"}
        )
    assert (same.status_code, other.status_code) == (429, 200)
    # 127.0.0.2 is no trusted proxy: what it forwards is ignored.
    with from_address(VICTIM, trusting_plane.url) as untrusted:
        statuses = [
            untrusted.get(
                "/api/v1/flags",
                headers={"X-API-Key": f"guess-{n}", "X-Forwarded-For": f"198.51.101.{n}"},
            ).status_code
            for n in range(7)
        ]
    assert statuses == [401] * 5 + [429] * 2
    _wait_for_lines(tmp_path / "plane.log", "/api/v1/flags", 15)
    clients = access_clients(tmp_path / "plane.log", "/api/v1/flags")
    assert clients[6:8] == ["198.51.100.7", "198.51.100.8"]
    assert set(clients[8:]) == {VICTIM}


def _wait_for_lines(log: Path, path: str, count: int) -> None:
    """Access lines are written after the response: read until ``count`` are there."""
    import time

    deadline = time.monotonic() + 10
    while len(access_clients(log, path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


# -- client addresses under uvicorn's defaults (protect) ----------------------------


def test_protect_under_default_uvicorn_ignores_rotated_forwarded_for() -> None:
    with serve("serve_apps:proxied_auth_app", ready_path="/whoami") as app:
        statuses = []
        with httpx.Client(base_url=app.url, timeout=10) as attacker:
            for n in range(12):
                headers = {"X-API-Key": f"guess-{n}", "X-Forwarded-For": f"198.51.100.{n}"}
                statuses.append(attacker.get("/admin", headers=headers).status_code)
        assert statuses == [401] * 5 + [429] * 7


def test_protect_under_default_uvicorn_does_not_lock_out_a_named_victim() -> None:
    with serve("serve_apps:proxied_auth_app", ready_path="/whoami") as app:
        with httpx.Client(base_url=app.url, timeout=10) as attacker:
            for n in range(25):
                headers = {"X-API-Key": f"guess-{n}", "X-Forwarded-For": VICTIM}
                attacker.get("/admin", headers=headers)
            assert attacker.get("/whoami", headers={"X-Forwarded-For": VICTIM}).text == "none"
        with from_address(VICTIM, app.url) as victim:
            answer = victim.get("/admin", headers={"X-API-Key": "ss_good"})
        assert (answer.status_code, answer.text) == (200, "admin")


def test_protect_under_default_uvicorn_uses_a_trusted_proxys_forwarded_address() -> None:
    env = {"TEST_SAFESHIP_TRUSTED_PROXIES": "127.0.0.1"}
    with serve("serve_apps:proxied_auth_app", env=env, ready_path="/whoami") as app:
        with httpx.Client(base_url=app.url, timeout=10) as proxy:
            for n in range(6):
                headers = {"X-API-Key": f"guess-{n}", "X-Forwarded-For": "198.51.100.7"}
                proxy.get("/admin", headers=headers)
            forwarded = {"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.7"}
            same = proxy.get("/admin", headers=forwarded)
            other = proxy.get("/admin", headers={**forwarded, "X-Forwarded-For": "198.51.100.8"})
            seen = proxy.get("/whoami", headers={"X-Forwarded-For": "198.51.100.8"}).text
        assert (same.status_code, other.status_code, seen) == (429, 200, "198.51.100.8")


# -- a Redis outage under safeship serve -------------------------------------------------


@pytest.mark.redis
def test_serve_keeps_answering_keyed_requests_while_redis_is_cut(
    redis_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    env = plane_env(tmp_path, SAFESHIP_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0")
    log = tmp_path / "plane.log"
    try:
        with serve_plane(env, log) as plane, httpx.Client(base_url=plane.url) as client:
            proxy.cut()
            me = client.get("/api/v1/me", headers={"X-API-Key": READ_KEY})
            killed = client.post(
                "/api/v1/flags/kill", json={"reason": "incident"}, headers={"X-API-Key": ADMIN_KEY}
            )
            bad = [
                client.get("/api/v1/me", headers={"X-API-Key": f"guess-{n}"}).status_code
                for n in range(8)
            ]
            ready = client.get("/health/ready").json()
        assert (me.status_code, killed.status_code) == (200, 200)
        assert bad == [401] * 5 + [429] * 3
        assert ready["checks"]["auth_failure_store"][0]["status"] == "warn"
        events = [json.loads(line).get("event") for line in log.read_text().splitlines()]
        assert events.count("auth.store_degraded") == 1
    finally:
        proxy.close()
