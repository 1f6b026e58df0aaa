"""Engine factory, migrations, audit trail and pool report on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import (
    create_engine,
    current_revision,
    head_revision,
    list_audit,
    normalise_url,
    record_audit,
    upgrade,
)
from safeship.db._pool import pool_report


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'safeship.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    yield engine
    engine.dispose()


def test_plain_postgres_urls_get_the_psycopg_and_asyncpg_drivers() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql://u@h/db", async_=True) == "postgresql+asyncpg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_upgrade_creates_tables_and_is_idempotent(engine: sa.Engine) -> None:
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    assert upgrade(engine) == head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"safeship_audit", "safeship_api_keys", "safeship_alembic_version"} <= tables


def test_audit_records_commit_with_the_change_and_roll_back_with_it(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        record_audit(
            conn,
            actor="alice",
            action="flag.enable",
            target="flag:checkout",
            before={"enabled": False},
            after={"enabled": True},
            reason="ready",
        )

    def failing_change() -> None:
        with engine.begin() as conn:
            record_audit(conn, actor="bob", action="flag.disable", target="flag:checkout")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with engine.connect() as conn:
        records = list_audit(conn)
    assert [(r.actor, r.action) for r in records] == [("alice", "flag.enable")]
    assert records[0].before == {"enabled": False} and records[0].after == {"enabled": True}
    assert records[0].at.tzinfo is not None


def test_audit_pages_newest_first(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        for i in range(5):
            record_audit(conn, actor="a", action="x", target=f"t{i % 2}")
    with engine.connect() as conn:
        first = list_audit(conn, limit=2)
        second = list_audit(conn, limit=2, before_id=first[-1].id)
        only_t1 = list_audit(conn, target="t1")
    assert [r.target for r in first + second] == ["t0", "t1", "t0", "t1"]
    assert len(only_t1) == 2


def test_audit_rejects_bad_input_without_writing(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="actor"):
            record_audit(conn, actor="", action="x", target="t")
        with pytest.raises(ValueError, match="limit"):
            list_audit(conn, limit=0)
        assert list_audit(conn) == []


def test_audit_cuts_a_reason_past_its_column_with_a_marker_instead_of_refusing(
    engine: sa.Engine,
) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        record_audit(conn, actor="a", action="x", target="t", reason="r" * 2001)
        (stored,) = list_audit(conn)
    assert stored.reason is not None and len(stored.reason) <= 2000
    assert stored.reason.startswith("r" * 100) and "more characters cut" in stored.reason


@pytest.mark.postgres
def test_pool_report_compares_fleet_demand_with_max_connections(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            small = pool_report(conn, pool_size=5, max_overflow=5, processes=2, reserve=5)
            huge = pool_report(conn, pool_size=50, max_overflow=50, processes=100, reserve=5)
    finally:
        engine.dispose()
    assert small.fits and not huge.fits
    assert small.by_state.get("active", 0) >= 1  # this very query
    assert "EXCEEDS" in huge.describe()


def test_pool_report_refuses_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn, pytest.raises(ValueError, match="PostgreSQL"):
        pool_report(conn, pool_size=1, max_overflow=0, processes=1, reserve=0)
    engine.dispose()
