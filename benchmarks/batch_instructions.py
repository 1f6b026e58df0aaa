"""Instructions of AsyncBatchWriter's own Python work for 100k shaped rows (the write is
a no-op): ``put_many`` + taking the batches + the shutdown flush.

    valgrind --tool=callgrind python benchmarks/batch_instructions.py 0
    valgrind --tool=callgrind python benchmarks/batch_instructions.py 2

(one warm-up pass, then N measured passes): the difference of the two totals divided by
two is the instructions of one pass of 100k rows.  ``--quick`` (as CI runs every
benchmark) makes the warm-up pass alone, without callgrind, so the script never rots."""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa

from safeship.data import AsyncBatchWriter

ROWS = 100_000
table = sa.Table(
    "ingest",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("enqueued", sa.Float),
    sa.Column("payload", sa.Text),
)
records = [(i, float(i), "payload-" + str(i % 97)) for i in range(ROWS)]


async def noop(rows: object) -> None:
    return None


async def measured() -> None:
    async with AsyncBatchWriter(
        None,
        table,
        backpressure="await",
        max_rows=50_000,
        capacity=100_000,
        name="instr",
        write=noop,
    ) as w:
        await w.put_many(records)
    assert w.stats.flushed == ROWS


async def main(passes: int) -> None:
    await measured()  # warm: imports, metrics created
    for _ in range(passes):
        await measured()


def passes_from(argv: list[str]) -> int:
    if argv == ["--quick"]:
        return 0
    if len(argv) != 1 or not argv[0].isdigit():
        raise SystemExit("usage: batch_instructions.py PASSES | --quick")
    return int(argv[0])


asyncio.run(main(passes_from(sys.argv[1:])))
