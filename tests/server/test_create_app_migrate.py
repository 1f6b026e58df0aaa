"""``create_app(migrate=True)`` never migrates silently: it logs ``db.migrated`` with the
revisions when it changed the schema, and nothing when the schema was current; with
``migrate=False`` a database not at this release's schema fails readiness instead."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from safeship.db import create_engine
from safeship.db._migrate import head_revision
from safeship.server import create_app
from tests.server.support import make_settings


def _migrated(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "db.migrated"]


def test_create_app_logs_the_migration_it_ran_and_only_then(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    try:
        with caplog.at_level(logging.INFO, logger="safeship.server"):
            create_app(make_settings(url), engine=engine, sample_interval=None)
        [record] = _migrated(caplog)
        assert record.levelno == logging.WARNING
        assert record.__dict__["from_revision"] is None
        assert record.__dict__["to_revision"] == head_revision()
        assert record.__dict__["database"].endswith("plane.db")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="safeship.server"):
            create_app(make_settings(url), engine=engine, sample_interval=None)
        assert _migrated(caplog) == []  # nothing to do: nothing said
    finally:
        engine.dispose()


def test_without_migrating_an_unmigrated_database_fails_readiness(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    try:
        app = create_app(make_settings(url), engine=engine, migrate=False, sample_interval=None)
        with TestClient(app) as client:
            ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "safeship db upgrade" in ready.text
    finally:
        engine.dispose()
