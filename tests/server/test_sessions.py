"""Dashboard sessions end server-side: sign-out, revocation, downgrade and rotation count at once.

Each test runs the real app (TestClient) on SQLite and PostgreSQL and replays a cookie
copied before the change, as a thief holding it would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safeship.cli import app as cli
from safeship.db._schema import api_keys
from safeship.server import create_app
from safeship.settings import Settings, load_settings
from tests.server.served import SESSION_SECRET
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers
from tests.server.test_dashboard import sign_in

COOKIE = "safeship_session"
ROTATED_KEY = "ss_rotated_Vb7Nm2Qx9Lk4Rt8Wp3Hc6Jd1Gf5Zs0Ay"


def _settings(database_url: str, keys: str) -> Settings:
    return load_settings(
        {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": keys,
            "SAFESHIP_SESSION_SECRET": SESSION_SECRET,
            "SAFESHIP_HEALTH_CACHE_SECONDS": "0",
        }
    )


@pytest.fixture
def plane_client(database_url: str, engine: sa.Engine) -> Iterator[TestClient]:
    """The app with a fixed session secret, so a second instance accepts its cookies."""
    keys = f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}"
    app = create_app(_settings(database_url, keys), engine=engine)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def _replica(database_url: str, engine: sa.Engine, keys: str) -> TestClient:
    """Another control-plane process on the same database (after a restart or a deploy)."""
    app = create_app(_settings(database_url, keys), engine=engine)
    return TestClient(app, base_url="http://testserver")


def _replay(client: TestClient, cookie: str) -> TestClient:
    client.cookies.clear()
    client.cookies.set(COOKIE, cookie)
    return client


def _kill_form(client: TestClient, token: str) -> int:
    """A dashboard admin form (the kill switch, left unconfirmed: 400 when admitted)."""
    response = client.post(
        "/flags-kill", data={"csrf_token": token, "confirm": "no"}, follow_redirects=False
    )
    return response.status_code


def test_a_cookie_replayed_after_sign_out_is_refused(plane_client: TestClient) -> None:
    token = sign_in(plane_client, ADMIN_KEY)
    cookie = plane_client.cookies[COOKIE]
    assert plane_client.get("/api/v1/me").json()["name"] == "operator"
    assert plane_client.post("/logout", data={"csrf_token": token}).status_code == 200

    _replay(plane_client, cookie)
    assert plane_client.get("/api/v1/me").status_code == 401
    page = plane_client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert _kill_form(plane_client, token) == 303  # back to sign-in, nothing done


def test_a_downgraded_key_loses_admin_forms_and_writes_at_once(
    plane_client: TestClient, engine: sa.Engine
) -> None:
    created = plane_client.post(
        "/api/v1/keys", json={"name": "oncall", "scope": "admin"}, headers=admin_headers()
    )
    key = created.json()["key"]
    token = sign_in(plane_client, key)
    assert _kill_form(plane_client, token) == 400  # admitted as admin
    with engine.begin() as conn:
        conn.execute(sa.update(api_keys).where(api_keys.c.name == "oncall").values(scope="read"))

    assert _kill_form(plane_client, token) == 403
    write = plane_client.post(
        "/api/v1/keys", json={"name": "x", "scope": "read"}, headers={"X-CSRF-Token": token}
    )
    assert write.status_code == 403
    assert plane_client.get("/api/v1/me").json() == {"name": "oncall", "scope": "read"}


@pytest.mark.parametrize("how", ["revoked", "deleted"])
def test_a_revoked_or_deleted_key_ends_its_sessions_at_once(
    plane_client: TestClient, engine: sa.Engine, how: str
) -> None:
    created = plane_client.post(
        "/api/v1/keys", json={"name": "temp", "scope": "admin"}, headers=admin_headers()
    )
    sign_in(plane_client, created.json()["key"])
    cookie = plane_client.cookies[COOKIE]
    assert plane_client.get("/api/v1/me").status_code == 200
    with engine.begin() as conn:  # as `safeship keys revoke` in another process would
        if how == "revoked":
            conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.name == "temp")
                .values(revoked_at=sa.func.current_timestamp())
            )
        else:
            conn.execute(sa.delete(api_keys).where(api_keys.c.name == "temp"))
    assert _replay(plane_client, cookie).get("/api/v1/me").status_code == 401


def test_a_settings_key_can_be_revoked_everywhere_with_its_sessions(
    plane_client: TestClient, database_url: str, engine: sa.Engine
) -> None:
    sign_in(plane_client, READ_KEY)
    cookie = plane_client.cookies[COOKIE]
    revoked = plane_client.post(
        "/api/v1/keys/reader/revoke", json={"reason": "leaked"}, headers=admin_headers()
    )
    assert revoked.status_code == 204
    assert _replay(plane_client, cookie).get("/api/v1/me").status_code == 401
    assert plane_client.get("/api/v1/me", headers={"X-API-Key": READ_KEY}).status_code == 401
    keys = f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}"
    with _replica(database_url, engine, keys) as replica:  # still in SAFESHIP_ADMIN_KEYS
        assert replica.get("/api/v1/me", headers={"X-API-Key": READ_KEY}).status_code == 401
        assert _replay(replica, cookie).get("/api/v1/me").status_code == 401
    again = plane_client.post("/api/v1/keys/reader/revoke", json={}, headers=admin_headers())
    assert again.status_code == 404
    # The documented rotation: a new value under the same name works again.
    rotated = f"reader:read:{ROTATED_KEY},operator:admin:{ADMIN_KEY}"
    with _replica(database_url, engine, rotated) as replica:
        me = replica.get("/api/v1/me", headers={"X-API-Key": ROTATED_KEY})
        assert me.json() == {"name": "reader", "scope": "read"}
    audit = plane_client.get("/api/v1/audit", headers=admin_headers()).json()
    assert any(r["action"] == "key.revoke" and r["target"] == "key:reader" for r in audit["items"])


def test_rotating_or_downgrading_a_settings_key_applies_to_its_old_sessions(
    plane_client: TestClient, database_url: str, engine: sa.Engine
) -> None:
    token = sign_in(plane_client, ADMIN_KEY)
    cookie = plane_client.cookies[COOKIE]
    downgraded = f"reader:read:{READ_KEY},operator:read:{ADMIN_KEY}"
    with _replica(database_url, engine, downgraded) as replica:
        _replay(replica, cookie)
        assert replica.get("/api/v1/me").json() == {"name": "operator", "scope": "read"}
        assert _kill_form(replica, token) == 403
    rotated = f"reader:read:{READ_KEY},operator:admin:{ROTATED_KEY}"
    with _replica(database_url, engine, rotated) as replica:
        assert _replay(replica, cookie).get("/api/v1/me").status_code == 401
        page = replica.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"


def test_sessions_are_stored_as_digests_and_expired_ones_are_cleaned(
    plane_client: TestClient, engine: sa.Engine
) -> None:
    sign_in(plane_client, READ_KEY)
    cookie = plane_client.cookies[COOKIE]
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT id, key_name FROM safeship_sessions")).all()
        assert [r.key_name for r in rows] == ["reader"]
        assert rows[0].id not in cookie  # only the token's SHA-256 is stored
        conn.execute(sa.text("UPDATE safeship_sessions SET expires_at = 0"))
    assert plane_client.get("/api/v1/me").status_code == 401  # expired server-side
    plane_client.cookies.clear()
    sign_in(plane_client, READ_KEY)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM safeship_sessions")).scalar() == 1


def test_the_cli_revokes_a_settings_key_and_its_sessions(
    plane_client: TestClient, database_url: str
) -> None:
    sign_in(plane_client, READ_KEY)
    cookie = plane_client.cookies[COOKIE]
    env = {
        "SAFESHIP_DATABASE_URL": database_url,
        "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
        "SAFESHIP_SESSION_SECRET": SESSION_SECRET,
    }
    result = CliRunner().invoke(cli, ["keys", "revoke", "reader", "--reason", "leaked"], env=env)
    assert result.exit_code == 0, result.output
    assert _replay(plane_client, cookie).get("/api/v1/me").status_code == 401
    again = CliRunner().invoke(cli, ["keys", "revoke", "reader"], env=env)
    assert again.exit_code == 1 and "no active key named 'reader'" in again.output
