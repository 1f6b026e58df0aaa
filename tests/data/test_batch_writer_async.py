"""The async batch writer on PostgreSQL (asyncpg through SQLAlchemy and a raw pool, and
psycopg COPY) and on SQLite (aiosqlite, multi-row INSERT): a poison row, an upsert replay,
backpressure, and the shutdown flush."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from safeship.data import AsyncBatchWriter, BatchConfigError
from tests.data.conftest import count, events_table

PG = pytest.mark.postgres


@pytest.fixture(
    params=[
        pytest.param("asyncpg", marks=PG),
        pytest.param("psycopg", marks=PG),
        pytest.param("asyncpg-pool", marks=PG),
        "aiosqlite",
    ]
)
async def setup(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Any, sa.Table, sa.Engine]]:
    if request.param == "aiosqlite":
        data_url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        data_url = request.getfixturevalue("data_pg_url")
    sync = sa.create_engine(data_url)
    metadata = sa.MetaData()
    table = events_table(metadata)
    metadata.create_all(sync)
    if request.param == "aiosqlite":
        engine = create_async_engine(data_url.replace("sqlite://", "sqlite+aiosqlite://"))
        yield engine, table, sync
        await engine.dispose()
    elif request.param == "asyncpg-pool":
        import asyncpg

        pool = await asyncpg.create_pool(
            data_url.replace("postgresql+psycopg", "postgresql"), min_size=1, max_size=2
        )
        yield pool, table, sync
        await pool.close()
    else:
        engine = create_async_engine(data_url.replace("+psycopg", f"+{request.param}"))
        yield engine, table, sync
        await engine.dispose()
    sync.dispose()


async def test_rows_land_and_close_flushes_the_rest(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, sync = setup
    sizes: list[int] = []
    async with AsyncBatchWriter(
        engine, table, backpressure="await", max_rows=400, max_delay=60,
        on_written=lambda rows: sizes.append(len(rows)),
    ) as writer:  # fmt: skip
        for i in range(1000):
            await writer.put((i, "click", i))
    assert count(sync, table) == 1000
    assert sizes == [400, 400, 200]
    assert writer.stats.flushed == 1000 and writer.stats.pending == 0


async def test_a_poison_row_is_isolated(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, sync = setup
    poisoned: list[Sequence[Any]] = []
    async with AsyncBatchWriter(
        engine, table, backpressure="await", max_rows=256,
        on_poison=lambda row, exc: poisoned.append(row),
    ) as writer:  # fmt: skip
        await writer.put_many((i, "click", -1 if i == 99 else 1) for i in range(256))
        await writer.flush()
        assert [r[0] for r in poisoned] == [99]
    assert count(sync, table) == 255
    assert writer.stats.failed == 1


async def test_replaying_a_batch_does_not_duplicate(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, sync = setup
    rows = [(i, "click", 1) for i in range(500)]
    for _ in range(2):
        async with AsyncBatchWriter(engine, table, backpressure="await", conflict=["id"]) as writer:
            await writer.put_many(rows)
    assert count(sync, table) == 500


async def test_await_backpressure_waits_for_room(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, sync = setup
    async with AsyncBatchWriter(
        engine, table, backpressure="await", max_rows=50, capacity=50, max_delay=0.01
    ) as writer:
        peak = 0
        for i in range(600):
            await writer.put((i, "x", 1))
            peak = max(peak, len(writer._rows))
        assert peak <= 50
    assert count(sync, table) == 600 and writer.stats.dropped == 0


async def test_drop_backpressure_counts(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, _ = setup
    release = asyncio.Event()

    async def slow(rows: Sequence[tuple[Any, ...]]) -> None:
        await release.wait()

    writer = AsyncBatchWriter(
        engine, table, backpressure="drop", max_rows=10, capacity=20, write=slow
    )
    accepted = sum([await writer.put((i, "x", 1)) for i in range(100)])
    release.set()
    await writer.aclose()
    assert accepted < 100 and writer.stats.dropped == 100 - accepted


async def test_block_is_not_an_async_mode(setup: tuple[Any, sa.Table, sa.Engine]) -> None:
    engine, table, _ = setup
    with pytest.raises(BatchConfigError, match="await, drop"):
        AsyncBatchWriter(engine, table, backpressure="block")
