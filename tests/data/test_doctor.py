"""The database doctor on real PostgreSQL (and what it says on SQLite): index health,
headroom, pool vocabulary, role timeouts, and conflict retry with rollback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.data import (
    API_ROLE,
    DatabaseRole,
    HeadroomError,
    PoolCollector,
    check_headroom,
    diagnose,
    pool_stats,
    run_transaction,
    watch_pool,
)
from safeship.data._errors import BatchConfigError


@pytest.fixture
def pg(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url, pool_size=2, max_overflow=1)
    watch_pool(engine, max_overflow=1)  # an engine built elsewhere: say its limit
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE parent (id serial PRIMARY KEY, code text, kind text);"
            "CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int REFERENCES parent(id),"
            " note text);"
            "CREATE INDEX parent_code ON parent (code);"
            "CREATE INDEX parent_code_again ON parent (code);"
            "CREATE INDEX parent_code_kind ON parent (code, kind);"
            "INSERT INTO parent (code, kind) SELECT 'same', 'k' FROM generate_series(1, 3);"
            "SELECT setval('parent_id_seq', 1900000000);"
        )
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    with auto.connect() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY parent_code_unique ON parent (code)")
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_the_doctor_finds_each_kind_of_index_problem(pg: sa.Engine) -> None:
    report = diagnose(pg, processes=2)
    health = report.indexes
    assert health is not None
    assert [r["index"] for r in health.invalid] == ["parent_code_unique"]
    pairs = {(r["index"], r["covered_by"], r["duplicate"]) for r in health.duplicates}
    assert ("parent_code_again", "parent_code", True) in pairs
    assert ("parent_code", "parent_code_kind", False) in pairs
    assert [(r["table"], r["columns"]) for r in health.fk_without_index] == [("child", "parent_id")]
    (sequence,) = health.sequences
    assert sequence["sequence"] == "parent_id_seq" and sequence["column_type"] == "integer"
    assert {"parent_code", "parent_code_kind"} <= {r["index"] for r in health.unused}
    text = "\n".join(report.problems)
    assert "INVALID index public.parent_code_unique" in text
    assert "has no index" in text and "parent_id_seq at 88%" in text
    assert report.headroom is not None and report.headroom.fleet_demand == 6
    assert report.to_dict()["pools"]["engine"]["max_size"] == 3


@pytest.mark.postgres
def test_slow_queries_come_from_pg_stat_statements_when_present(pg: sa.Engine) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    report = diagnose(pg)
    assert report.indexes is not None
    if report.indexes.slow_queries is None:  # the extension is there but not preloaded
        assert report.notes == [] or "pg_stat_statements" in report.notes[0]
    else:
        assert isinstance(report.indexes.slow_queries, list)


@pytest.mark.postgres
def test_headroom_that_does_not_fit_refuses_to_start(pg: sa.Engine) -> None:
    with pytest.raises(HeadroomError, match="EXCEEDS"):
        check_headroom(pg, processes=10_000, pool_size=20, max_overflow=10)
    assert check_headroom(pg, processes=1, pool_size=2, max_overflow=1).fits


def test_on_sqlite_the_doctor_says_what_it_cannot_check(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    report = diagnose(engine)
    assert report.indexes is None and "PostgreSQL" in report.notes[0]
    engine.dispose()


@pytest.mark.postgres
def test_pool_figures_count_waits_and_exhaustion(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=5)
    watch_pool(engine, max_overflow=0)
    held = engine.connect()
    released = threading.Event()

    def take() -> None:
        with engine.connect():
            released.set()

    waiter = threading.Thread(target=take)
    waiter.start()
    held.close()
    waiter.join(10)
    assert released.is_set()
    stats = pool_stats(engine)
    # Both checkouts took the pool's only connection; the second found it after a wait.
    assert stats.exhausted_total == 2 and stats.max_size == 1
    assert stats.wait_seconds_total is None  # SQLAlchemy's public API does not say
    families = {f.name: f for f in PoolCollector({"api": engine}).collect()}
    assert families["safeship_db_pool_exhausted"].samples[0].value == 2
    assert families["safeship_db_pool_exhausted"].samples[0].labels == {"pool": "api"}
    assert families["safeship_db_pool_max_connections"].samples[0].value == 1
    engine.dispose()


@pytest.mark.postgres
async def test_asyncpg_pools_speak_the_same_vocabulary(postgres_url: str) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(postgres_url.replace("+psycopg", ""), min_size=2, max_size=4)
    try:
        async with pool.acquire():
            stats = pool_stats(pool)
        assert (stats.kind, stats.size, stats.in_use, stats.max_size) == ("asyncpg", 2, 1, 4)
    finally:
        await pool.close()


@pytest.mark.postgres
def test_a_role_sets_its_timeouts_on_every_connection(postgres_url: str) -> None:
    role = DatabaseRole.from_settings(API_ROLE, {"SAFESHIP_DB_ROLE_API_LOCK_TIMEOUT_MS": "750"})
    engine = sa.create_engine(postgres_url)
    role.apply(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "750ms"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
        conn.rollback()
        with conn.begin():
            DatabaseRole("batch", 0, 1000).set_local(conn)
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1s"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "750ms"
    engine.dispose()


def test_bad_role_settings_are_refused() -> None:
    with pytest.raises(BatchConfigError, match="whole number"):
        DatabaseRole.from_settings(API_ROLE, {"SAFESHIP_DB_ROLE_API_LOCK_TIMEOUT_MS": "2s"})
    with pytest.raises(BatchConfigError, match="statement_timeout_ms"):
        DatabaseRole("api", -1, 0)


@pytest.mark.postgres
def test_a_deadlock_is_retried_after_a_rollback(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE account (id int PRIMARY KEY, balance int)")
        conn.exec_driver_sql("INSERT INTO account VALUES (1, 100), (2, 100)")
    both_locked = threading.Barrier(2, timeout=10)
    attempts: list[int] = []

    def transfer(first: int, second: int) -> Any:
        def work(conn: sa.Connection) -> None:
            attempts.append(first)
            conn.exec_driver_sql(f"UPDATE account SET balance = balance - 1 WHERE id = {first}")
            if len(attempts) <= 2:
                both_locked.wait()
            conn.exec_driver_sql(f"UPDATE account SET balance = balance + 1 WHERE id = {second}")

        return lambda: run_transaction(engine.begin, work)

    threads = [threading.Thread(target=transfer(1, 2)), threading.Thread(target=transfer(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.connect() as conn:
        balances: dict[int, int] = dict(
            conn.exec_driver_sql("SELECT id, balance FROM account").all()
        )
    assert balances == {1: 100, 2: 100}  # both transfers landed once each, nothing half-done
    assert len(attempts) == 3  # one of them was chosen as the deadlock victim and rerun
    engine.dispose()


@pytest.mark.postgres
def test_psycopg_pool_speaks_the_same_vocabulary(postgres_url: str) -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg_pool.ConnectionPool(conninfo, min_size=2, max_size=3, open=True) as pool:
        pool.wait(10)
        with pool.connection():
            stats = pool_stats(pool)
    assert (stats.kind, stats.size, stats.max_size, stats.in_use) == ("psycopg_pool", 2, 3, 1)
    assert stats.waiting == 0 and stats.wait_seconds_total is not None
