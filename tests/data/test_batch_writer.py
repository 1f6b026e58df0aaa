"""The sync batch writer on SQLite and PostgreSQL: size and time flushes, poison rows,
shutdown flush, backpressure, upserts, and refusals of bad input."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.data import (
    BatchConfigError,
    BatchRowError,
    BatchWriter,
    BatchWriterClosedError,
)
from safeship.testing import capture_logs
from tests.data.conftest import count


def test_rows_written_in_batches_of_max_rows(engine: sa.Engine, events: sa.Table) -> None:
    sizes: list[int] = []
    with BatchWriter(
        engine, events, backpressure="block", max_rows=100, max_delay=5.0,
        on_written=lambda rows: sizes.append(len(rows)),
    ) as writer:  # fmt: skip
        assert writer.put_many((i, "click", i) for i in range(250)) == 250
        assert writer.flush(timeout=30)
    assert count(engine, events) == 250
    assert sizes[:2] == [100, 100] and sum(sizes) == 250
    assert writer.stats.flushed == 250 and writer.stats.failed == 0


def test_a_lone_row_is_written_after_max_delay(engine: sa.Engine, events: sa.Table) -> None:
    done = threading.Event()
    with BatchWriter(
        engine, events, backpressure="block", max_rows=1000, max_delay=0.05,
        on_written=lambda rows: done.set(),
    ) as writer:  # fmt: skip
        writer.put({"id": 1, "kind": "view", "amount": 3})
        assert done.wait(10), "the time-based flush never came"
        assert count(engine, events) == 1


def test_close_writes_what_is_still_buffered(engine: sa.Engine, events: sa.Table) -> None:
    writer = BatchWriter(engine, events, backpressure="block", max_rows=10_000, max_delay=60)
    writer.put_many((i, "buy", 1) for i in range(1234))
    writer.close()
    assert count(engine, events) == 1234
    with pytest.raises(BatchWriterClosedError):
        writer.put((99_999, "late", 1))


def test_a_poison_row_is_set_aside_and_its_batch_still_lands(
    engine: sa.Engine, events: sa.Table
) -> None:
    poisoned: list[tuple[Any, ...]] = []
    with capture_logs() as logs, BatchWriter(
        engine, events, backpressure="block", max_rows=500, max_delay=5,
        on_poison=lambda row, exc: poisoned.append(row),
    ) as writer:  # fmt: skip
        rows = [(i, "click", -5 if i in (17, 400) else i) for i in range(500)]
        writer.put_many(rows)
        writer.flush(timeout=60)
    assert sorted(r[0] for r in poisoned) == [17, 400]
    assert count(engine, events) == 498
    assert writer.stats.failed == 2 and writer.stats.flushed == 498
    assert len(logs.events("data.batch.poison_row")) == 2


def test_upsert_replay_does_not_duplicate(engine: sa.Engine, events: sa.Table) -> None:
    with BatchWriter(
        engine, events, backpressure="block", conflict=["id"], update=["amount"]
    ) as writer:
        writer.put_many((i, "click", 1) for i in range(300))
        writer.flush(timeout=30)
        writer.put_many((i, "click", 2) for i in range(150, 450))
        writer.put((449, "click", 7))  # the same key twice in one batch: the last one wins
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(events.c.id, events.c.amount)).all())
    assert len(rows) == 450
    assert rows[0] == 1 and rows[150] == 2 and rows[449] == 7


def test_ignore_duplicates_keeps_the_first_write(engine: sa.Engine, events: sa.Table) -> None:
    with BatchWriter(engine, events, backpressure="block", conflict=["id"]) as writer:
        writer.put((1, "first", 1))
        writer.flush(timeout=30)
        writer.put((1, "second", 2))
    with engine.connect() as conn:
        assert conn.execute(sa.select(events.c.kind)).scalar_one() == "first"


def test_a_full_buffer_in_drop_mode_counts_the_dropped_rows(
    engine: sa.Engine, events: sa.Table
) -> None:
    gate = threading.Event()

    def slow_written(rows: Sequence[tuple[Any, ...]]) -> None:
        gate.wait(10)

    writer = BatchWriter(
        engine, events, backpressure="drop", max_rows=10, capacity=10, max_delay=0.01,
        on_written=slow_written,
    )  # fmt: skip
    accepted = 0
    for i in range(100):
        accepted += writer.put((i, "x", 1))
    gate.set()
    writer.close()
    stats = writer.stats
    assert stats.dropped == 100 - accepted and stats.dropped > 0
    assert count(engine, events) == accepted == stats.flushed


def test_a_full_buffer_in_block_mode_times_out_when_asked(
    events: sa.Table, engine: sa.Engine
) -> None:
    gate = threading.Event()
    writer = BatchWriter(
        engine, events, backpressure="block", max_rows=5, capacity=5, max_delay=0.01,
        block_timeout=0.2, on_written=lambda rows: gate.wait(10),
    )  # fmt: skip

    def fill() -> None:
        for i in range(100):
            writer.put((i, "x", 1))

    with pytest.raises(TimeoutError):
        fill()
    gate.set()
    writer.close()
    assert writer.stats.dropped == 0
    assert count(engine, events) == writer.stats.buffered


def test_a_failing_database_sends_the_batch_to_on_failure(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    table = sa.Table("missing", sa.MetaData(), sa.Column("id", sa.Integer))
    failed: list[int] = []
    with BatchWriter(
        engine, table, backpressure="block", retry_attempts=2, retry_base=0,
        on_failure=lambda rows, exc: failed.append(len(rows)),
    ) as writer:  # fmt: skip
        writer.put_many([(1,), (2,), (3,)])
        writer.flush(timeout=30)
    assert failed == [3] and writer.stats.failed == 3


def test_bad_rows_and_settings_are_refused(engine: sa.Engine, events: sa.Table) -> None:
    with pytest.raises(BatchConfigError, match="backpressure"):
        BatchWriter(engine, events, backpressure="await")
    with pytest.raises(BatchConfigError, match="max_rows"):
        BatchWriter(engine, events, backpressure="block", max_rows=0)
    with pytest.raises(BatchConfigError, match="capacity"):
        BatchWriter(engine, events, backpressure="block", max_rows=100, capacity=10)
    with pytest.raises(BatchConfigError, match="not columns"):
        BatchWriter(engine, events, backpressure="block", conflict=["nope"])
    with BatchWriter(engine, events, backpressure="block") as writer:
        with pytest.raises(BatchRowError, match="3 columns"):
            writer.put((1, 2))
        with pytest.raises(BatchRowError, match="unknown"):
            writer.put({"id": 1, "colour": "red"})
        with pytest.raises(BatchRowError, match="mapping or a sequence"):
            writer.put("1,click,3")
    assert writer.stats.buffered == 0


def test_put_many_fills_the_room_then_drops_the_rest(engine: sa.Engine, events: sa.Table) -> None:
    gate = threading.Event()
    writer = BatchWriter(
        engine, events, backpressure="drop", max_rows=10, capacity=10, max_delay=60,
        on_written=lambda rows: gate.wait(10),
    )  # fmt: skip
    assert writer.put_many([(i, "x", 1) for i in range(25)]) == 10
    assert writer.stats.dropped == 15 and writer.stats.buffered == 10
    gate.set()
    writer.close()
    assert count(engine, events) == 10


def test_put_many_waits_for_room_in_block_mode(engine: sa.Engine, events: sa.Table) -> None:
    sizes: list[int] = []
    with BatchWriter(
        engine, events, backpressure="block", max_rows=100, capacity=100, max_delay=60,
        on_written=lambda rows: sizes.append(len(rows)),
    ) as writer:  # fmt: skip
        assert writer.put_many((i, "x", 1) for i in range(1050)) == 1050
    assert count(engine, events) == 1050 and sum(sizes) == 1050 and max(sizes) == 100


def test_put_many_with_a_bad_row_buffers_none(engine: sa.Engine, events: sa.Table) -> None:
    with BatchWriter(engine, events, backpressure="block") as writer:
        with pytest.raises(BatchRowError):
            writer.put_many([(1, "x", 1), (2, "x")])
        assert writer.stats.buffered == 0
