"""The migration runner on real PostgreSQL: lock_timeout on the migration's connection, a
lock-timeout retry, INVALID indexes reported and dropped, and safeship's own upgrade."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from safeship.data import MigrationFailedError, configure_lock_timeout, safe_upgrade

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id int PRIMARY KEY, code text)")
        conn.exec_driver_sql("INSERT INTO orders VALUES (1, 'same'), (2, 'same')")
    yield engine
    engine.dispose()


def test_the_run_sees_the_lock_timeout_and_the_pool_gets_it_back_reset(pg: sa.Engine) -> None:
    def run() -> str:
        with pg.connect() as conn:
            return str(conn.exec_driver_sql("SHOW lock_timeout").scalar())

    assert safe_upgrade(pg, run, lock_timeout_ms=250).value == "250ms"
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"


def test_a_lock_timeout_is_retried_until_the_lock_is_free(pg: sa.Engine) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pg.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE orders IN ACCESS SHARE MODE")
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    waits: list[float] = []

    def let_go(delay: float) -> None:  # the first wait frees the table, so the retry can win
        waits.append(delay)
        release.set()
        holder.join(10)

    def migrate() -> None:
        with pg.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE orders ADD COLUMN note text")

    result = safe_upgrade(pg, migrate, lock_timeout_ms=100, sleep=let_go)
    assert result.attempts == 2 and len(waits) == 1
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT note FROM orders WHERE id = 1").all() == [(None,)]


def test_an_invalid_index_left_behind_is_reported_and_dropped(pg: sa.Engine) -> None:
    def migrate() -> None:
        with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY orders_code ON orders (code)")

    with pytest.raises(MigrationFailedError) as caught:
        safe_upgrade(pg, migrate, drop_invalid=True)
    assert caught.value.invalid_indexes == ['"public"."orders_code"']
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError)
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('orders_code')").scalar() is None


def test_safeships_own_upgrade_runs_through_the_runner(pg: sa.Engine) -> None:
    from safeship.db import head_revision, upgrade

    assert safe_upgrade(pg, lambda: upgrade(pg)).value == head_revision()


def test_an_alembic_env_can_set_the_timeout_itself(pg: sa.Engine) -> None:
    with pg.connect() as conn:
        configure_lock_timeout(conn, lock_timeout_ms=1500, statement_timeout_ms=60_000)
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1500ms"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
