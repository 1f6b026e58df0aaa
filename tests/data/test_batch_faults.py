"""Faults the batch writer must survive without losing a row: the database connection cut
mid-stream (a TCP proxy in front of the real PostgreSQL), and a flaky async write."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.data import AsyncBatchWriter, BatchWriter
from tests.data.conftest import count, events_table
from tests.support.tcp_proxy import TcpProxy


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.mark.postgres
def test_a_cut_connection_is_retried_and_no_row_is_lost(data_pg_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    url = data_pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    direct = sa.create_engine(data_pg_url)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    metadata = sa.MetaData()
    table = events_table(metadata)
    metadata.create_all(direct)
    try:
        with BatchWriter(
            engine, table, backpressure="block", conflict=["id"], retry_attempts=50,
            retry_base=0.01, max_delay=0.01,
        ) as writer:  # fmt: skip
            writer.put_many((i, "before", 1) for i in range(500))
            assert writer.flush(timeout=30)
            proxy.cut()
            writer.put_many((i, "during", 1) for i in range(500, 1000))
            wait_until(lambda: writer.stats.retries >= 1)
            proxy.restore()
            assert writer.flush(timeout=60)
        assert count(direct, table) == 1000
        assert writer.stats.failed == 0 and writer.stats.flushed == 1000
    finally:
        proxy.restore()
        engine.dispose()
        direct.dispose()


async def test_a_flaky_write_is_retried_in_order_and_counted() -> None:
    table = events_table(sa.MetaData())
    landed: list[tuple[Any, ...]] = []
    failures = iter([ConnectionError("reset"), ConnectionError("reset")])

    async def write(rows: Sequence[tuple[Any, ...]]) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        landed.extend(rows)

    async with AsyncBatchWriter(
        None, table, backpressure="await", retry_base=0, write=write, max_rows=100
    ) as writer:
        await writer.put_many((i, "x", 1) for i in range(250))
    assert [r[0] for r in landed] == list(range(250))
    assert writer.stats.retries == 2 and writer.stats.failed == 0
