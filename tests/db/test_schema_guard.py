"""A stale schema is refused up front (readiness, CLI); concurrent upgrades are serialised."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.db import (
    SchemaMismatchError,
    create_engine,
    current_revision,
    ensure_current,
    head_revision,
    upgrade,
)
from safeship.observe.health import HealthRegistry, schema_check
from safeship.settings import load_settings

OLD = "0003_breakers"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def stale_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    upgrade(engine, OLD)
    yield engine
    engine.dispose()


def _readiness(engine: sa.Engine) -> tuple[str, str | None]:
    registry = HealthRegistry()
    registry.add("schema", schema_check(engine), kinds=("readiness",))
    report = asyncio.run(registry.run("readiness"))
    return report.status, report.checks["schema"].output


def test_revisions_of_the_message_are_the_shipped_migration_ids() -> None:
    versions = Path(__file__).resolve().parents[2] / "src/safeship/db/migrations/versions"
    assert head_revision() == sorted(p.stem for p in versions.glob("0*.py"))[-1]
    assert (versions / f"{OLD}.py").exists()


def test_readiness_fails_on_a_stale_schema_naming_both_revisions(stale_engine: sa.Engine) -> None:
    status, output = _readiness(stale_engine)
    assert status == "fail"
    assert output == f"schema at {OLD}, package needs {head_revision()}: run `safeship db upgrade`"
    upgrade(stale_engine)
    assert _readiness(stale_engine)[0] == "pass"


def test_readiness_fails_before_any_table_exists(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        status, output = _readiness(engine)
    finally:
        engine.dispose()
    assert status == "fail" and output is not None and "tables do not exist" in output


def test_a_schema_newer_than_the_package_says_to_upgrade_the_package(
    stale_engine: sa.Engine,
) -> None:
    upgrade(stale_engine)
    with stale_engine.begin() as conn:
        conn.execute(sa.text("UPDATE safeship_alembic_version SET version_num = '0099_future'"))
    with pytest.raises(SchemaMismatchError, match="upgrade the safeship package"):
        ensure_current(stale_engine)


def test_the_control_plane_is_not_ready_on_a_stale_schema(
    stale_engine: sa.Engine, database_url: str
) -> None:
    from safeship.server import create_app

    settings = load_settings(
        {"SAFESHIP_DATABASE_URL": database_url, "SAFESHIP_HEALTH_CACHE_SECONDS": "0"}
    )
    with TestClient(create_app(settings, engine=stale_engine, migrate=False)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert f"schema at {OLD}, package needs {head_revision()}" in response.text


@pytest.mark.postgres
def test_an_async_engine_is_checked_too(postgres_url: str) -> None:
    from safeship.db._engine import create_async_engine

    sync = create_engine(postgres_url)
    upgrade(sync, OLD)
    sync.dispose()
    engine = create_async_engine(postgres_url)
    registry = HealthRegistry()
    registry.add("schema", schema_check(engine), kinds=("readiness",))

    async def probe() -> str | None:
        try:
            return (await registry.run("readiness")).checks["schema"].output
        finally:
            await engine.dispose()

    assert f"schema at {OLD}" in str(asyncio.run(probe()))


@pytest.mark.postgres
def test_app_processes_upgrading_at_once_on_postgres_all_succeed(postgres_url: str) -> None:
    """Four processes' worth of engines call upgrade() together; the advisory lock
    makes them take turns, so none fails on a table another is creating."""
    engines = [create_engine(postgres_url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    reached: list[str] = []
    errors: list[BaseException] = []

    def migrate(engine: sa.Engine) -> None:
        start.wait()
        try:
            reached.append(upgrade(engine))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == [] and reached == [head_revision()] * len(engines)
        assert current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            e.dispose()
