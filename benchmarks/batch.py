"""Batch writes and the N+1 detector on PostgreSQL: safeship against its peers, same run.

    python benchmarks/batch.py [--quick] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Cases:
  ingest-10k         rows/s committed while 10,000 msg/s are offered for 6 s (2 s quick):
                     ``safeship`` (AsyncBatchWriter, asyncpg COPY, 1,000 rows / 20 ms) and
                     ``baseline`` (one autocommit INSERT per message, one message at a
                     time on one connection: a consumer that writes each message as it
                     handles it, the shape the issue measured at 1,875 rows/s) and
                     ``baseline-4conn`` (the same on 4 connections in parallel)
  ingest-10k-p99     ms from enqueue to commit, 99th percentile, same runs (rows still
                     uncommitted when the drain ends count with their age at that moment)
  ingest-max         rows/s committed within 6 s (2 s quick) by a producer that offers
                     messages as fast as each impl takes them (the writer's ``put`` waits
                     on a full buffer; the baseline's queue holds 1,000): the capacity of
                     each, so the ratio is not capped by the 10,000 msg/s offered above
  bulk-insert        rows/s for 100k rows (20k quick), median of 5 rounds (7 quick) after a
                     warm-up round: ``safeship`` (AsyncBatchWriter, ``max_rows`` = the row
                     count, so one COPY), ``copy`` (one raw asyncpg ``copy_records_to_table``)
                     and ``insertmanyvalues`` (SQLAlchemy executemany of ``insert()``)
  nplusone-overhead  ratio of a request's time with the N+1 detector in sampling mode
                     (every request sampled) to the same request without it

Every run writes to a throw-away database created for it and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from safeship.data import AsyncBatchWriter, NPlusOneDetector

RATE = 10_000
#: The per-message baselines: impl name -> connections inserting in parallel.
BASELINES = {"baseline": 1, "baseline-4conn": 4}
CASES = ("ingest-10k", "ingest-10k-p99", "ingest-max", "bulk-insert", "nplusone-overhead")


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": "batch", "case": case, "impl": impl, "value": round(value, 3), "unit": unit}
    print(json.dumps(line), flush=True)


def ingest_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "ingest",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("enqueued", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"safeship_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def reset(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE ingest")


def p99(latencies: Sequence[float]) -> float:
    if len(latencies) < 2:
        return latencies[0] * 1000 if latencies else float("nan")
    return statistics.quantiles(latencies, n=100)[98] * 1000


async def offer(seconds: float, put: Callable[[tuple[Any, ...]], Any]) -> int:
    """Offer RATE messages a second for ``seconds``, paced every 5 ms; the number offered."""
    start = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * RATE)
        while sent < due:
            await put((sent, time.perf_counter(), "click"))
            sent += 1
        await asyncio.sleep(0.005)
    return sent


async def ingest_safeship(
    pool: asyncpg.Pool, table: sa.Table, seconds: float
) -> tuple[float, float]:
    latencies: list[float] = []

    def written(rows: Sequence[tuple[Any, ...]]) -> None:
        now = time.perf_counter()
        latencies.extend(now - row[1] for row in rows)

    writer = AsyncBatchWriter(
        pool, table, backpressure="await", max_rows=1000, max_delay=0.02, capacity=50_000,
        on_written=written, name="bench-ingest",
    )  # fmt: skip
    await writer.start()
    start = time.perf_counter()
    await offer(seconds, writer.put)
    delivered = len(latencies)
    await writer.aclose()
    return delivered / (time.perf_counter() - start), p99(latencies)


class PerMessageInserts:
    """``connections`` consumers, each taking one message at a time from ``queue`` and
    committing it with an autocommit INSERT of its own, then calling ``on_row(row)``.
    :meth:`stop` lets a consumer inside an INSERT finish it (a cancelled asyncpg query
    closes its connection) and cancels the ones waiting for a message."""

    def __init__(
        self, pool: asyncpg.Pool, queue: asyncio.Queue[tuple[Any, ...]], connections: int,
        on_row: Callable[[tuple[Any, ...]], None],
    ) -> None:  # fmt: skip
        self.pool, self.queue, self.on_row = pool, queue, on_row
        self.stopped = False
        self.busy: set[int] = set()
        self.tasks = [asyncio.create_task(self._consume(n)) for n in range(connections)]

    async def _consume(self, n: int) -> None:
        async with self.pool.acquire() as conn:
            while not self.stopped:
                row = await self.queue.get()
                self.busy.add(n)
                await conn.execute("INSERT INTO ingest VALUES ($1, $2, $3)", *row)
                self.busy.discard(n)
                self.on_row(row)
                self.queue.task_done()

    async def stop(self) -> None:
        self.stopped = True
        for n, task in enumerate(self.tasks):
            if n not in self.busy:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def ingest_baseline(
    pool: asyncpg.Pool, seconds: float, connections: int
) -> tuple[float, float]:
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    latencies: list[float] = []
    consumers = PerMessageInserts(
        pool, queue, connections, lambda row: latencies.append(time.perf_counter() - row[1])
    )
    start = time.perf_counter()
    await offer(seconds, queue.put)
    delivered = len(latencies)
    rate = delivered / (time.perf_counter() - start)
    with contextlib.suppress(TimeoutError):  # drain for as long again, then give up
        await asyncio.wait_for(queue.join(), seconds)
    await consumers.stop()
    now = time.perf_counter()
    latencies.extend(now - row[1] for row in _drain(queue))
    return rate, p99(latencies)


async def flood(seconds: float, put: Callable[[tuple[Any, ...]], Any]) -> None:
    """Offer messages as fast as ``put`` takes them, for ``seconds``."""
    deadline = time.perf_counter() + seconds
    sent = 0
    while time.perf_counter() < deadline:
        for _ in range(100):
            await put((sent, 0.0, "click"))
            sent += 1
        await asyncio.sleep(0)  # the consumers run even when ``put`` never has to wait


async def capacity_safeship(pool: asyncpg.Pool, table: sa.Table, seconds: float) -> float:
    """Rows the writer commits within ``seconds`` of a flood (rows still buffered at the
    deadline are not counted)."""
    committed = 0
    deadline = 0.0

    def written(rows: Sequence[tuple[Any, ...]]) -> None:
        nonlocal committed
        if time.perf_counter() <= deadline:
            committed += len(rows)

    writer = AsyncBatchWriter(
        pool, table, backpressure="await", max_rows=1000, max_delay=0.02, capacity=50_000,
        on_written=written, name="bench-capacity",
    )  # fmt: skip
    await writer.start()
    deadline = time.perf_counter() + seconds
    await flood(seconds, writer.put)
    await writer.aclose()
    return committed / seconds


async def capacity_baseline(pool: asyncpg.Pool, seconds: float, connections: int) -> float:
    """Rows ``connections`` connections commit, one autocommit INSERT each, within
    ``seconds``."""
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=1000)
    committed = 0

    def count(_row: tuple[Any, ...]) -> None:
        nonlocal committed
        committed += 1

    consumers = PerMessageInserts(pool, queue, connections, count)
    await flood(seconds, queue.put)
    done = committed
    await consumers.stop()
    return done / seconds


def _drain(queue: asyncio.Queue[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def bulk(dsn: str, pool: asyncpg.Pool, table: sa.Table, rows: int) -> dict[str, float]:
    """Median rows/s per impl over interleaved rounds, after one warm-up round of each.

    Every impl writes the same rows into the same emptied table in one transaction: the
    writer's ``max_rows`` is the row count, so it makes one COPY as the raw case does."""
    records = [(i, float(i), "payload-" + str(i % 97)) for i in range(rows)]
    results: dict[str, list[float]] = {"safeship": [], "copy": [], "insertmanyvalues": []}
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    impls = list(results)
    for round_ in range(-1, 7 if rows < 100_000 else 5):  # round -1 warms up, not counted
        for impl in impls[round_ % 3 :] + impls[: round_ % 3]:  # each goes first in turn
            await reset(pool)
            gc.collect()  # the garbage of the impl before (insertmanyvalues' dicts) is not timed
            start = time.perf_counter()
            if impl == "copy":
                await pool.copy_records_to_table(
                    "ingest", records=records, columns=["id", "enqueued", "payload"]
                )
            elif impl == "safeship":
                async with AsyncBatchWriter(
                    pool,
                    table,
                    backpressure="await",
                    max_rows=rows,
                    capacity=rows,
                    name="bench-bulk",
                ) as writer:
                    await writer.put_many(records)
            else:
                values = [{"id": r[0], "enqueued": r[1], "payload": r[2]} for r in records]
                async with engine.begin() as conn:
                    await conn.execute(table.insert(), values)
            if round_ >= 0:
                results[impl].append(rows / (time.perf_counter() - start))
    await engine.dispose()
    return {impl: statistics.median(v) for impl, v in results.items()}


def nplusone_overhead(dsn: str, quick: bool) -> float:
    """Median ratio, over interleaved rounds, of a request's time with the detector watching
    every request (sampling mode, rate 1) to the same request unwatched.  The request is an
    ORM listing of 20 flags whose rules load lazily: 21 statements, the detector's worst case."""

    class Base(DeclarativeBase):
        pass

    class Flag(Base):
        __tablename__ = "bench_flag"
        id: Mapped[int] = mapped_column(primary_key=True)
        rules: Mapped[list[Rule]] = relationship()

    class Rule(Base):
        __tablename__ = "bench_rule"
        id: Mapped[int] = mapped_column(primary_key=True)
        flag_id: Mapped[int] = mapped_column(sa.ForeignKey("bench_flag.id"))

    engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Flag(id=i, rules=[Rule() for _ in range(4)]) for i in range(20))
        session.commit()
    detector = NPlusOneDetector(mode="log", sample_rate=1.0, threshold=10_000)

    def request() -> int:
        with Session(engine) as session:
            return sum(len(flag.rules) for flag in session.scalars(sa.select(Flag)))

    def watched() -> int:
        with detector.unit("GET /flags"):
            return request()

    ratios = []
    per_round = 20 if quick else 50
    for _ in range(6 if quick else 15):
        timings = []
        for fn in (request, watched):
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            timings.append(time.perf_counter() - start)
        ratios.append(timings[1] / timings[0])
    engine.dispose()
    return statistics.median(ratios)


async def main_async(args: argparse.Namespace) -> None:
    seconds = 2.0 if args.quick else 6.0
    rows = 20_000 if args.quick else 100_000
    async with scratch_database(args.dsn) as dsn:
        metadata = sa.MetaData()
        table = ingest_table(metadata)
        sync = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
        metadata.create_all(sync)
        sync.dispose()
        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=6)
        cases = set(args.case or CASES)
        try:
            if cases & {"ingest-10k", "ingest-10k-p99"}:
                rate, late = await ingest_safeship(pool, table, seconds)
                emit("ingest-10k", "safeship", rate, "rows/s")
                emit("ingest-10k-p99", "safeship", late, "ms")
                for impl, connections in BASELINES.items():
                    await reset(pool)
                    base_rate, base_late = await ingest_baseline(pool, seconds, connections)
                    emit("ingest-10k", impl, base_rate, "rows/s")
                    emit("ingest-10k-p99", impl, base_late, "ms")
                    emit("ingest-10k", f"safeship/{impl}", rate / base_rate, "ratio")
            if "ingest-max" in cases:
                await reset(pool)
                most = await capacity_safeship(pool, table, seconds)
                await reset(pool)
                emit("ingest-max", "safeship", most, "rows/s")
                for impl, connections in BASELINES.items():
                    await reset(pool)
                    base = await capacity_baseline(pool, seconds, connections)
                    emit("ingest-max", impl, base, "rows/s")
                    emit("ingest-max", f"safeship/{impl}", most / base, "ratio")
            if "bulk-insert" in cases:
                for impl, value in (await bulk(dsn, pool, table, rows)).items():
                    emit("bulk-insert", impl, value, "rows/s")
            if "nplusone-overhead" in cases:
                ratio = await asyncio.to_thread(nplusone_overhead, dsn, args.quick)
                emit("nplusone-overhead", "safeship", ratio, "ratio")
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 60 s")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--case", action="append", choices=CASES, help="run only this case")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
