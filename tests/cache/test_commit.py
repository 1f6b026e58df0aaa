"""Invalidation after a Core Connection's commit, through public SQLAlchemy events only:
at the end of ``engine.begin()``, at the next transaction after ``conn.commit()``, never
before the commit, never for a commit that failed (SQLAlchemy's own error surfaces)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.cache import Cache


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[sa.Engine, str]]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}")

        @sa.event.listens_for(engine, "connect")
        def foreign_keys(dbapi_connection: object, record: object) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[attr-defined]

    else:
        engine = sa.create_engine(request.getfixturevalue("postgres_url"))
    suffix = uuid.uuid4().hex[:8]
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE p_{suffix} (id INTEGER PRIMARY KEY)"))
        conn.execute(
            sa.text(
                f"CREATE TABLE c_{suffix} (id INTEGER PRIMARY KEY, p INTEGER REFERENCES "
                f"p_{suffix} (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    yield engine, suffix
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE c_{suffix}"))
        conn.execute(sa.text(f"DROP TABLE p_{suffix}"))
    engine.dispose()


def _cache() -> Cache:
    cache = Cache("commit-" + uuid.uuid4().hex[:8])
    cache.set("row", 1, tags=["rows"])
    return cache


def test_engine_begin_invalidates_when_the_block_commits(db: tuple[sa.Engine, str]) -> None:
    engine, _ = db
    cache = _cache()
    with engine.begin() as conn:
        conn.execute(sa.text("select 1"))
        cache.invalidate_after_commit(conn, tags=["rows"])
        assert cache.get("row") == 1  # not before the commit
    assert cache.get("row") is None


def test_a_commit_then_more_work_invalidates_at_the_next_transaction(
    db: tuple[sa.Engine, str],
) -> None:
    engine, _ = db
    cache = _cache()
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
        cache.invalidate_after_commit(conn, tags=["rows"])
        conn.commit()
        conn.execute(sa.text("select 1"))  # begins the next transaction: the commit is done
        assert cache.get("row") is None
        conn.rollback()


def test_a_rollback_invalidates_nothing(db: tuple[sa.Engine, str]) -> None:
    engine, _ = db
    cache = _cache()
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
        cache.invalidate_after_commit(conn, tags=["rows"])
        conn.rollback()
    assert cache.get("row") == 1


def test_a_failed_commit_raises_sqlalchemy_error_and_invalidates_nothing(
    db: tuple[sa.Engine, str],
) -> None:
    engine, suffix = db
    cache = _cache()
    conn = engine.connect()
    conn.begin()
    conn.execute(sa.text(f"INSERT INTO c_{suffix} (id, p) VALUES (1, 42)"))  # no p 42
    cache.invalidate_after_commit(conn, tags=["rows"])
    with pytest.raises(sa.exc.IntegrityError):  # SQLAlchemy's wrapper, not the driver's
        conn.commit()
    conn.close()
    assert cache.get("row") == 1
    with engine.connect() as conn:  # the connection's next begin and check-in flush nothing
        conn.execute(sa.text("select 1"))
        conn.rollback()
    assert cache.get("row") == 1
