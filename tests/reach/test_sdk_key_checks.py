"""The key check of the SDK routes: no database read and no worker-thread hop while the key
set is fresh, a revoked key refused once it is reloaded (within the ring's ttl, 5 s by
default), and the brute-force limit still in front of every check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from safeship.db._engine import create_engine
from safeship.db._schema import metadata
from safeship.server.keys import KeyRing, create_key, revoke_key
from safeship.settings import load_settings
from tests.reach.conftest import Plane
from tests.server.support import READ_KEY


def _ring(tmp_path: Path, ttl: float) -> tuple[KeyRing, sa.Engine, list[str]]:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    settings = load_settings({"SAFESHIP_DATABASE_URL": url, "SAFESHIP_SESSION_SECRET": "s" * 32})
    return KeyRing(settings, engine, ttl=ttl), engine, statements


def test_a_fresh_ring_checks_without_io_and_a_revoked_key_fails_after_the_ttl(
    tmp_path: Path,
) -> None:
    ring, engine, statements = _ring(tmp_path, ttl=0.3)
    with engine.begin() as conn:
        key = create_key(conn, name="sdk", scope="read", actor="test")
    assert ring.stale
    principal = ring.authenticate(key)  # loads the key set
    assert principal is not None and principal.name == "sdk"
    assert not ring.stale
    before = len(statements)
    for _ in range(50):
        assert ring.authenticate(key, refresh=False) == principal
        assert ring.authenticate(key + "x", refresh=False) is None
    assert len(statements) == before  # no database read per check
    with engine.begin() as conn:
        assert revoke_key(conn, name="sdk", actor="test")
    # the bound: once the ttl has passed the ring is stale, and the next check reloads
    deadline = time.monotonic() + 5
    while not ring.stale:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ring.authenticate(key) is None
    engine.dispose()


def test_sdk_routes_keep_the_brute_force_limit(plane: Plane) -> None:
    with httpx.Client(base_url=plane.url, timeout=10) as client:
        assert client.get("/api/client/features", headers={"Authorization": READ_KEY}).is_success
        statuses = [
            client.get("/api/client/features", headers={"Authorization": f"guess-{i}"}).status_code
            for i in range(7)
        ]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        limited = client.post(
            "/ofrep/v1/evaluate/flags/any", headers={"Authorization": READ_KEY}, json={}
        )
        assert limited.status_code == 429  # even a right key waits out the window
