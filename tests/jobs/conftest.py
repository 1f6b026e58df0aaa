"""Fixtures for the jobs tests: migrated SQLite and PostgreSQL databases, a polling helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, upgrade


def wait_until(condition: Callable[[], Any], *, timeout: float, message: str) -> None:
    """Poll ``condition()`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.02)


async def await_until(condition: Callable[[], Any], *, timeout: float, message: str) -> None:  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(0.02)


def run_two_workers_until_finished(
    jobs: Any, engine: sa.Engine, ids: list[Any], *, concurrency: int, **options: Any
) -> None:
    """Two workers, each on its own thread, until every job of ``ids`` has finished."""
    import threading

    from safeship.jobs import Worker, status

    workers = [Worker(jobs, engine, concurrency=concurrency, **options) for _ in range(2)]
    threads = [threading.Thread(target=w.run_sync) for w in workers]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: all(status(engine, i).state.finished for i in ids),
            timeout=60,
            message="all ran",
        )
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(30)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/jobs.db")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh PostgreSQL database migrated to the newest schema."""
    engine = create_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    return postgres_url


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """The same test on SQLite and on PostgreSQL."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unmigrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """An empty database (no migration run yet), on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    yield engine
    engine.dispose()
