"""The asyncio twin of :class:`~safeship.data.BatchWriter`: one flusher task per writer.

``backpressure="await"`` makes ``await put(row)`` wait for room; ``"drop"`` refuses the row
and counts it.  Writes go through an :class:`~sqlalchemy.ext.asyncio.AsyncEngine`
(asyncpg / psycopg COPY, aiosqlite multi-row INSERT) or straight through an asyncpg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import sqlalchemy as sa

from safeship.data import _batch_metrics as metrics
from safeship.data._batch import FailureHandler, PoisonHandler, WrittenHandler, _Counters
from safeship.data._batch_core import (
    BatchSettings,
    BatchStats,
    Row,
    RowBuffer,
    check_backpressure,
    classify_error,
    normalise_row,
    normalise_rows,
)
from safeship.data._batch_sql import Target, write_async
from safeship.data._errors import BatchWriterClosedError

__all__ = ["AsyncBatchWriter"]

log = logging.getLogger("safeship.data.batch")


class AsyncBatchWriter:
    """Buffer rows for ``table`` and write them in batches from a background task.

    Use it as ``async with AsyncBatchWriter(...) as writer:`` (or call :meth:`start` and
    :meth:`aclose`), so the rows still buffered at shutdown are written.
    """

    def __init__(
        self,
        engine: Any,
        table: sa.Table,
        *,
        backpressure: str,
        columns: Sequence[str] | None = None,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        max_rows: int = 1000,
        max_delay: float = 0.02,
        capacity: int = 10_000,
        retry_attempts: int = 5,
        retry_base: float = 0.05,
        on_poison: PoisonHandler | None = None,
        on_failure: FailureHandler | None = None,
        on_written: WrittenHandler | None = None,
        name: str | None = None,
        write: Callable[[Sequence[Row]], Awaitable[None]] | None = None,
    ) -> None:
        self.mode = check_backpressure(backpressure, ("await", "drop"))
        self.settings = BatchSettings(max_rows, max_delay, capacity, retry_attempts, retry_base)
        self.target = Target.of(table, columns, conflict, update)
        self.name = name or table.name
        self._engine = engine
        self._write_rows = write
        self._on_poison, self._on_failure, self._on_written = on_poison, on_failure, on_written
        self._rows = RowBuffer()
        self._counters = _Counters()
        self._in_flight = 0
        self._closing = False
        self._urgent = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"safeship-batch-{self.name}"
            )
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- producers ---------------------------------------------------------------------

    async def put(self, row: Mapping[str, Any] | Sequence[Any]) -> bool:
        """Buffer one row; ``False`` when it was dropped because the buffer was full."""
        value = normalise_row(row, self.target.columns)
        if self._task is None:
            await self.start()
        while len(self._rows) >= self.settings.capacity:
            if self._closing:
                break
            if self.mode == "drop":
                self._counters.dropped += 1
                metrics.rows(self.name, "dropped", 1)
                return False
            self._room.clear()
            await self._room.wait()
        if self._closing:
            raise BatchWriterClosedError(f"batch writer {self.name!r} is closed")
        self._rows.add(time.monotonic(), value)
        self._counters.buffered += 1
        if len(self._rows) == 1 or len(self._rows) >= self.settings.max_rows:
            self._wake.set()
        return True

    async def put_many(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> int:
        """Buffer rows in order, as much at a time as there is room for; the number buffered.

        Every row is checked before any is buffered, so a bad one leaves none of them in.
        """
        values = normalise_rows(rows, self.target.columns)
        if self._task is None:
            await self.start()
        done = 0
        while done < len(values):
            room = self.settings.capacity - len(self._rows)
            if self._closing:
                raise BatchWriterClosedError(f"batch writer {self.name!r} is closed")
            if room <= 0:
                if self.mode == "drop":
                    dropped = len(values) - done
                    self._counters.dropped += dropped
                    metrics.rows(self.name, "dropped", dropped)
                    return done
                self._room.clear()
                await self._room.wait()
                continue
            chunk = values if done == 0 and room >= len(values) else values[done : done + room]
            self._rows.extend(time.monotonic(), chunk)
            self._counters.buffered += len(chunk)
            done += len(chunk)
            self._wake.set()
        return done

    @property
    def stats(self) -> BatchStats:
        return self._counters.snapshot(len(self._rows) + self._in_flight)

    async def flush(self) -> None:
        """Wait until every row buffered so far is written (or set aside)."""
        target = self._counters.buffered
        self._urgent = True
        self._wake.set()
        while self._counters.flushed + self._counters.failed < target:
            self._progress.clear()
            await self._progress.wait()

    async def aclose(self) -> None:
        """Stop taking rows, write what is buffered, and end the flusher task."""
        self._closing = True
        self._wake.set()
        self._room.set()
        if self._task is not None:
            await self._task

    # -- the flusher -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._take()
            if batch is None:
                return
            await self._write(batch)

    async def _take(self) -> list[Row] | None:
        settings = self.settings
        while True:
            if self._rows and (
                self._closing
                or self._urgent
                or len(self._rows) >= settings.max_rows
                or time.monotonic() - self._rows.oldest >= settings.max_delay
            ):
                count = min(len(self._rows), settings.max_rows)
                batch = self._rows.take(count)
                self._in_flight = count
                self._urgent = self._urgent and bool(self._rows)
                self._room.set()
                return batch
            if self._closing:
                return None
            self._wake.clear()
            timeout = None
            if self._rows:
                timeout = max(self._rows.oldest + settings.max_delay - time.monotonic(), 0.0005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _write(self, batch: list[Row]) -> None:
        started = time.perf_counter()
        written, failed = await self._write_bisecting(batch)
        metrics.flushed(self.name, len(batch), time.perf_counter() - started)
        metrics.rows(self.name, "flushed", written)
        metrics.rows(self.name, "failed", failed)
        metrics.rows(self.name, "buffered", self._counters.unreported())
        self._counters.flushed += written
        self._counters.failed += failed
        self._counters.flushes += 1
        self._in_flight = 0
        self._progress.set()

    async def _write_bisecting(self, rows: list[Row]) -> tuple[int, int]:
        error = await self._attempt(rows)
        if error is None:
            return len(rows), 0
        if classify_error(error) != "row":
            log.error(
                "data.batch.failed",
                extra={"writer": self.name, "rows": len(rows), "error": repr(error)},
            )
            _call(self._on_failure, rows, error)
            return 0, len(rows)
        if len(rows) == 1:
            log.warning("data.batch.poison_row", extra={"writer": self.name, "error": repr(error)})
            _call(self._on_poison, rows[0], error)
            return 0, 1
        half = len(rows) // 2
        left = await self._write_bisecting(rows[:half])
        right = await self._write_bisecting(rows[half:])
        return left[0] + right[0], left[1] + right[1]

    async def _attempt(self, rows: list[Row]) -> BaseException | None:
        for attempt in range(1, self.settings.retry_attempts + 1):
            try:
                if self._write_rows is not None:
                    await self._write_rows(rows)
                else:
                    await write_async(self._engine, self.target, rows)
            except Exception as exc:  # noqa: BLE001 - classified, retried or set aside below
                if classify_error(exc) != "transient" or attempt == self.settings.retry_attempts:
                    return exc
                log.warning(
                    "data.batch.retry",
                    extra={"writer": self.name, "attempt": attempt, "error": repr(exc)},
                )
                self._counters.retries += 1
                await asyncio.sleep(self.settings.backoff(attempt))
                continue
            _call(self._on_written, rows)
            return None
        return None  # pragma: no cover - the loop always returns


def _call(hook: Callable[..., object] | None, *args: Any) -> None:
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("data.batch.hook_failed", extra={"hook": getattr(hook, "__name__", "?")})
