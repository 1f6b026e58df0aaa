"""A control plane served over real HTTP (uvicorn in a thread) for the SDK tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from safeship.db._engine import create_engine
from safeship.flags.store import FlagStore
from safeship.server import create_app
from safeship.settings import load_settings
from tests.server.served import free_port
from tests.server.support import ADMIN_KEY, READ_KEY

FRONTEND_KEY = "ss_front_Ve7Qa2Mn9Lp4Rx8Tk3Hb6Jc1Gd5Zs0Aw"


@dataclass
class Plane:
    url: str
    store: FlagStore
    engine: sa.Engine


def plane_settings(database_url: str) -> object:
    return load_settings(
        {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": (
                f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY},browser:frontend:{FRONTEND_KEY}"
            ),
            "SAFESHIP_SESSION_SECRET": "test-session-secret-Zq8Wv3Nr7Tb2Lk9Mx4",
            "SAFESHIP_HEALTH_CACHE_SECONDS": "0",
        }
    )


@contextlib.contextmanager
def served_plane(url: str) -> Iterator[Plane]:
    """The control plane on the database at ``url``, listening on 127.0.0.1."""
    engine = create_engine(url)
    app = create_app(plane_settings(url), engine=engine)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the control plane did not start"
        time.sleep(0.02)
    try:
        yield Plane(f"http://127.0.0.1:{port}", FlagStore(engine), engine)
    finally:
        server.should_exit = True
        thread.join(20)
        engine.dispose()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    """The control plane on a fresh SQLite file (its feed polls the version every second)."""
    with served_plane(f"sqlite:///{tmp_path / 'plane.db'}") as served:
        yield served


@pytest.fixture
def postgres_plane(postgres_url: str) -> Iterator[Plane]:
    """The control plane on a fresh PostgreSQL database (its feed LISTENs for changes)."""
    with served_plane(postgres_url) as served:
        yield served
