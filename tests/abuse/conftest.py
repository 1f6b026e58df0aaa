"""Abuse-suite fixtures: one real ``safeship serve`` per database for the whole run.

``plane`` is shared by every test that does not need a server of its own (each uses
names of its own), on a SQLite file and on a fresh PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.abuse.plane import Plane, fresh_postgres_database, serve_plane
from tests.conftest import need_service

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
HERE = "tests/abuse/"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` the suite runs on one worker, so it starts its shared
    servers once rather than once per worker."""
    for item in items:
        if item.nodeid.startswith(HERE):
            item.add_marker(pytest.mark.xdist_group("abuse"))


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A SQLite file or a fresh PostgreSQL database, for the run."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('abuse') / 'plane.db'}"
        return
    need_service("PostgreSQL", "127.0.0.1", 5432)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def plane(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """``safeship serve`` on ``database_url``, shared by the run's tests."""
    with serve_plane(database_url, tmp_path_factory.mktemp("logs")) as served:
        yield served
