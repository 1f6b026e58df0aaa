"""A control plane on SQLite and PostgreSQL for the rollout safety tests, and real
database triggers that refuse chosen writes (a failure the database itself raises)."""

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
def plane_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def plane_engine(plane_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(plane_url)
    yield engine
    engine.dispose()


@pytest.fixture
def plane(plane_url: str, plane_engine: sa.Engine) -> Iterator[TestClient]:
    app = create_app(make_settings(plane_url), engine=plane_engine)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def refuse_writes(engine: sa.Engine, table: str, *, when: str, column: str | None = None) -> None:
    """Make the database refuse UPDATEs of ``table`` (of ``column`` only, if given) for
    rows matching ``when`` (an SQL condition on ``OLD``), as a broken constraint would."""
    of = f" OF {column}" if column else ""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_{table} BEFORE UPDATE{of} ON {table} WHEN {when} "
                "BEGIN SELECT RAISE(ABORT, 'write refused by the database'); END"
            )
            return
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'write refused by the database'; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER refuse_{table} BEFORE UPDATE{of} ON {table} FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION refuse_{table}()"
        )


def allow_writes(engine: sa.Engine, table: str) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"DROP TRIGGER refuse_{table}")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER refuse_{table} ON {table}")
