"""safeship's own migrations through the safe runner (``safeship db upgrade`` and
``create_app(migrate=True)``): concurrent upgraders wait for each other past the
lock_timeout, a blocked migration is retried, SQLite is a plain upgrade."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from safeship.cli import app as cli
from safeship.data._migrate_runner import upgrade_safeship
from safeship.db import head_revision, upgrade
from safeship.db._migrate import _LOCK_ID

LOCK_MS = 100


@pytest.fixture
def fresh(postgres_url: str) -> str:
    """A new, empty database for this test."""
    return postgres_url


def _waiting_upgraders(conn: sa.Connection) -> int:
    return int(
        conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            f"AND objid = {_LOCK_ID} AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"
        ).scalar_one()
    )


def _counting_creates(engine: sa.Engine) -> list[str]:
    created: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            created.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    return created


@pytest.mark.postgres
def test_a_second_upgrader_waits_past_the_lock_timeout_and_nothing_is_applied_twice(
    fresh: str,
) -> None:
    holder = sa.create_engine(fresh)
    engines = [sa.create_engine(fresh), sa.create_engine(fresh)]
    creates = [_counting_creates(e) for e in engines]
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = upgrade_safeship(engines[i], lock_timeout_ms=LOCK_MS)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results[i] = exc

    with holder.connect() as held:
        # Stand in for a first upgrader that takes long: hold the upgraders' lock.
        held.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_ID})")
        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while _waiting_upgraders(held) < 2:
            assert time.monotonic() < deadline, "the upgraders never queued on the lock"
            time.sleep(0.02)
        # Five lock timeouts later both still wait: the queue is not under lock_timeout.
        time.sleep(5 * LOCK_MS / 1000)
        assert _waiting_upgraders(held) == 2
        assert results == [None, None]
        held.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_ID})")
        for thread in threads:
            thread.join(60)
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result.value == head_revision() and result.attempts == 1
    # One upgrader created every table; the other found nothing left to do.
    assert sorted(len(c) for c in creates) == [0, max(len(c) for c in creates)]
    assert max(len(c) for c in creates) >= 10
    with holder.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM safeship_alembic_version").all()
    assert versions == [(head_revision(),)]
    for engine in (holder, *engines):
        engine.dispose()


@pytest.mark.postgres
def test_a_migration_blocked_by_a_held_lock_is_retried_and_lands_once_it_is_free(
    fresh: str,
) -> None:
    engine = sa.create_engine(fresh)
    upgrade(engine, "0009_idempotency")  # 0010 alters safeship_rollouts
    blocker = engine.connect()
    blocker.begin()
    blocker.exec_driver_sql("LOCK TABLE safeship_rollouts IN ACCESS SHARE MODE")
    waits: list[float] = []

    def let_go(delay: float) -> None:  # the first backoff frees the table
        waits.append(delay)
        blocker.rollback()

    try:
        result = upgrade_safeship(engine, lock_timeout_ms=LOCK_MS, sleep=let_go)
    finally:
        blocker.close()
    assert result.attempts == 2 and len(waits) == 1
    assert result.value == head_revision() and result.invalid_indexes == []
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("safeship_rollouts")}
        # The pooled session keeps no lock_timeout: env.py sets it for the transaction only.
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
    assert "migration_phase" in columns
    engine.dispose()


@pytest.mark.postgres
def test_a_lock_that_is_never_freed_fails_after_the_attempts(fresh: str) -> None:
    from safeship.data import MigrationFailedError

    engine = sa.create_engine(fresh)
    upgrade(engine, "0009_idempotency")
    with engine.connect() as blocker:
        blocker.begin()
        blocker.exec_driver_sql("LOCK TABLE safeship_rollouts IN ACCESS SHARE MODE")
        with pytest.raises(MigrationFailedError, match="after 3 attempt"):
            upgrade_safeship(engine, lock_timeout_ms=LOCK_MS, attempts=3, sleep=lambda _: None)
    with engine.connect() as conn:  # rolled back whole: still at 0009
        version = conn.exec_driver_sql("SELECT version_num FROM safeship_alembic_version")
        assert version.scalar() == "0009_idempotency"
    engine.dispose()


@pytest.mark.postgres
def test_the_cli_upgrade_runs_through_the_runner(fresh: str) -> None:
    engine = sa.create_engine(fresh)
    upgrade(engine, "0009_idempotency")
    with engine.connect() as blocker:
        blocker.begin()
        blocker.exec_driver_sql("LOCK TABLE safeship_rollouts IN ACCESS SHARE MODE")
        args = ["db", "upgrade", "--database-url", fresh, "--lock-timeout-ms", "50"]
        blocked = CliRunner().invoke(cli, [*args, "--attempts", "2"])
    assert blocked.exit_code == 2, blocked.output
    assert "migration failed after 2 attempt" in blocked.output
    assert "lock timeout" in blocked.output and "Traceback" not in blocked.output
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert f"database at revision {head_revision()} (was 0009_idempotency)" in done.output
    engine.dispose()


def test_sqlite_upgrade_is_a_plain_upgrade(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plane.db'}")
    first = upgrade_safeship(engine, lock_timeout_ms=LOCK_MS)
    again = upgrade_safeship(engine)
    assert (first.value, first.attempts) == (head_revision(), 1)
    assert (again.value, again.attempts, again.invalid_indexes) == (head_revision(), 1, [])
    engine.dispose()
