"""The doctor where operators see it: ``safeship db doctor``, the API route and the
Database page of the control plane, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safeship.cli import app as cli
from safeship.db import create_engine
from safeship.server import create_app
from tests.server.support import READ_KEY, make_settings, read_headers

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plane.db'}"
    found: str = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(found)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE item (id int PRIMARY KEY, owner int);"
            "CREATE TABLE owner (id int PRIMARY KEY);"
            "ALTER TABLE item ADD FOREIGN KEY (owner) REFERENCES owner(id);"
        )
    engine.dispose()
    return found


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    engine = create_engine(url)
    with TestClient(create_app(make_settings(url), engine=engine)) as client:
        yield client
    engine.dispose()


def test_the_cli_prints_the_report_and_strict_fails_on_findings(url: str, tmp_path: Path) -> None:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)  # the file must exist: the CLI never creates one
        engine.connect().close()
        engine.dispose()
    result = runner.invoke(cli, ["db", "doctor", "--json", "--database-url", url])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert "engine" in report["pools"]
    strict = runner.invoke(cli, ["db", "doctor", "--strict", "--database-url", url])
    if url.startswith("sqlite"):
        assert strict.exit_code == 0 and "PostgreSQL" in strict.output
    else:
        assert strict.exit_code == 1
        assert "foreign key item_owner_fkey on public.item(owner) has no index" in strict.output


def test_the_api_route_needs_a_key_and_reports(client: TestClient, url: str) -> None:
    assert client.get("/api/v1/database/doctor").status_code == 401
    response = client.get("/api/v1/database/doctor", headers=read_headers())
    assert response.status_code == 200
    body = response.json()
    assert body["pools"]["engine"]["kind"] == "sqlalchemy"
    if url.startswith("postgresql"):
        assert body["headroom"]["fits"] is True
        assert [r["constraint"] for r in body["indexes"]["fk_without_index"]] == ["item_owner_fkey"]


def test_the_database_page_shows_pools_and_index_use(client: TestClient, url: str) -> None:
    assert client.get("/database", follow_redirects=False).status_code == 303
    client.post("/login", data={"key": READ_KEY}, follow_redirects=False)
    page = client.get("/database")
    assert page.status_code == 200
    assert 'href="/database"' in page.text and 'data-pool="engine"' in page.text
    if url.startswith("postgresql"):
        assert 'id="database-indexes"' in page.text and 'data-index="item_pkey"' in page.text
        assert "has no index" in page.text


def test_db_lint_exits_1_on_findings_and_0_when_clean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("SET lock_timeout = '2s';\nCREATE INDEX i ON t (a);\n")
    result = runner.invoke(cli, ["db", "lint", str(bad)])
    assert result.exit_code == 1 and "bad.sql:2: create-index-not-concurrently" in result.output
    good = tmp_path / "good.sql"
    good.write_text("CREATE INDEX CONCURRENTLY i ON t (a);\n")
    clean = runner.invoke(cli, ["db", "lint", "--runner-sets-lock-timeout", str(good)])
    assert clean.exit_code == 0 and "0 finding(s)" in clean.output
    missing = runner.invoke(cli, ["db", "lint", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2


@pytest.mark.postgres
def test_the_control_plane_logs_a_fleet_that_outgrows_the_server(postgres_url: str) -> None:
    from safeship.settings import load_settings
    from safeship.testing import capture_logs

    settings = load_settings(
        {
            "SAFESHIP_DATABASE_URL": postgres_url,
            "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY}",
            "SAFESHIP_SESSION_SECRET": "test-session-secret-Zq8Wv3Nr7Tb2Lk9Mx4",
            "SAFESHIP_DB_EXPECTED_PROCESSES": "10000",
        }
    )
    engine = create_engine(postgres_url)
    with capture_logs() as logs, TestClient(create_app(settings, engine=engine)):
        pass
    engine.dispose()
    (record,) = logs.events("data.pool.headroom")
    assert "EXCEEDS" in record.verdict  # type: ignore[attr-defined]
