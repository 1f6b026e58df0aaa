"""Control-plane fixtures: an app on SQLite (and PostgreSQL where marked) with known keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db import create_engine
from safeship.server import create_app
from tests.server.support import make_settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def client(database_url: str, engine: sa.Engine) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url), engine=engine)
    with TestClient(app, base_url="http://testserver") as client:
        yield client
