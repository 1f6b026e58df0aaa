"""A bounded, buffered writer for high-rate row streams (sync; see ``_batch_async``).

Producers ``put`` rows; one flusher thread writes up to ``max_rows`` at a time, when that
many are waiting or the oldest has waited ``max_delay`` seconds.  A full buffer does what
``backpressure`` says: ``block`` the producer, or ``drop`` the row and count it.  ``close``
writes what is left.  A batch that fails on a row is bisected so only the poison rows are
set aside (``on_poison``); a batch that keeps failing for another reason goes to
``on_failure`` after ``retry_attempts``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import sqlalchemy as sa

from safeship.data import _batch_metrics as metrics
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
from safeship.data._batch_sql import Target, write_sync
from safeship.data._errors import BatchConfigError, BatchWriterClosedError

__all__ = ["BatchWriter", "FailureHandler", "PoisonHandler"]

log = logging.getLogger("safeship.data.batch")

PoisonHandler = Callable[[Row, BaseException], object]
FailureHandler = Callable[[Sequence[Row], BaseException], object]
WrittenHandler = Callable[[Sequence[Row]], object]


class _Counters:
    """Mutable counters behind :class:`BatchStats`, updated under the writer's lock."""

    def __init__(self) -> None:
        self.buffered = self.flushed = self.failed = self.dropped = self.flushes = 0
        self.retries = self.reported = 0

    def unreported(self) -> int:
        """Rows buffered since the last call: the metric is counted once per flush."""
        delta, self.reported = self.buffered - self.reported, self.buffered
        return delta

    def snapshot(self, pending: int) -> BatchStats:
        return BatchStats(
            self.buffered,
            self.flushed,
            self.failed,
            self.dropped,
            self.flushes,
            pending,
            self.retries,
        )


class BatchWriter:
    """Buffer rows for ``table`` and write them in batches from a background thread.

    ``backpressure`` has no default: ``"block"`` waits for room (at most ``block_timeout``
    seconds, then :class:`TimeoutError`), ``"drop"`` refuses the row, counts it, and
    returns ``False``.  ``conflict`` (and ``update``) make the writes idempotent upserts.
    """

    def __init__(
        self,
        engine: sa.Engine,
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
        block_timeout: float | None = None,
        on_poison: PoisonHandler | None = None,
        on_failure: FailureHandler | None = None,
        on_written: WrittenHandler | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(engine, sa.Engine):
            raise BatchConfigError("BatchWriter needs a sqlalchemy Engine; use AsyncBatchWriter")
        self.mode = check_backpressure(backpressure, ("block", "drop"))
        self.settings = BatchSettings(max_rows, max_delay, capacity, retry_attempts, retry_base)
        self.target = Target.of(table, columns, conflict, update)
        self.name = name or table.name
        self._engine = engine
        self._block_timeout = block_timeout
        self._on_poison, self._on_failure, self._on_written = on_poison, on_failure, on_written
        self._rows = RowBuffer()
        self._lock = threading.Condition()
        self._counters = _Counters()
        self._in_flight = 0
        self._closing = False
        self._urgent = False
        self._thread = threading.Thread(target=self._run, name=f"safeship-batch-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    # -- producers ---------------------------------------------------------------------

    def put(self, row: Mapping[str, Any] | Sequence[Any]) -> bool:
        """Buffer one row; ``False`` when it was dropped because the buffer was full."""
        value = normalise_row(row, self.target.columns)
        with self._lock:
            if self._closing:
                raise BatchWriterClosedError(f"batch writer {self.name!r} is closed")
            if len(self._rows) >= self.settings.capacity and not self._wait_for_room():
                self._counters.dropped += 1
                metrics.rows(self.name, "dropped", 1)
                return False
            self._rows.add(time.monotonic(), value)
            self._counters.buffered += 1
            if len(self._rows) >= self.settings.max_rows:
                self._lock.notify_all()
        return True

    def put_many(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> int:
        """Buffer rows in order, as much at a time as there is room for; the number buffered
        (with ``drop``, the rest were dropped when the buffer filled).

        Every row is checked before any is buffered, so a bad one leaves none of them in.
        """
        values = normalise_rows(rows, self.target.columns)
        done = 0
        with self._lock:
            while done < len(values):
                if self._closing:
                    raise BatchWriterClosedError(f"batch writer {self.name!r} is closed")
                room = self.settings.capacity - len(self._rows)
                if room <= 0:
                    if not self._wait_for_room():  # drop: the rest are refused
                        dropped = len(values) - done
                        self._counters.dropped += dropped
                        metrics.rows(self.name, "dropped", dropped)
                        return done
                    continue
                whole = done == 0 and room >= len(values)
                chunk = values if whole else values[done : done + room]
                self._rows.extend(time.monotonic(), chunk)
                self._counters.buffered += len(chunk)
                done += len(chunk)
                if len(self._rows) >= self.settings.max_rows:
                    self._lock.notify_all()
        return done

    def _wait_for_room(self) -> bool:
        if self.mode == "drop":
            return False
        deadline = None if self._block_timeout is None else time.monotonic() + self._block_timeout
        while len(self._rows) >= self.settings.capacity and not self._closing:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"batch writer {self.name!r} stayed full {self._block_timeout}s")
            self._lock.wait(left)
        if self._closing:
            raise BatchWriterClosedError(f"batch writer {self.name!r} closed while full")
        return True

    # -- state -------------------------------------------------------------------------

    @property
    def stats(self) -> BatchStats:
        with self._lock:
            return self._counters.snapshot(len(self._rows) + self._in_flight)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row buffered so far is written (or set aside); ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
            target = self._counters.buffered
            self._urgent = True
            while self._counters.flushed + self._counters.failed < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left if left is not None else 0.05)
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking rows, write what is buffered, and stop the flusher thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "data.batch.close_timeout",
                extra={"writer": self.name, "pending": self.stats.pending},
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the flusher -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._write(batch)

    def _take(self) -> list[Row] | None:
        with self._lock:
            while True:
                if self._rows and (
                    self._closing
                    or self._urgent
                    or len(self._rows) >= self.settings.max_rows
                    or time.monotonic() - self._rows.oldest >= self.settings.max_delay
                ):
                    count = min(len(self._rows), self.settings.max_rows)
                    batch = self._rows.take(count)
                    self._in_flight = count
                    self._urgent = self._urgent and bool(self._rows)
                    self._lock.notify_all()
                    return batch
                if self._closing:
                    return None
                wait = self.settings.max_delay
                if self._rows:
                    wait = self._rows.oldest + self.settings.max_delay - time.monotonic()
                self._lock.wait(max(wait, 0.0005))

    def _write(self, batch: list[Row]) -> None:
        started = time.perf_counter()
        written, failed = self._write_bisecting(batch)
        metrics.flushed(self.name, len(batch), time.perf_counter() - started)
        metrics.rows(self.name, "flushed", written)
        metrics.rows(self.name, "failed", failed)
        with self._lock:
            metrics.rows(self.name, "buffered", self._counters.unreported())
            self._counters.flushed += written
            self._counters.failed += failed
            self._counters.flushes += 1
            self._in_flight = 0
            self._lock.notify_all()

    def _write_bisecting(self, rows: list[Row]) -> tuple[int, int]:
        """Write ``rows``; on a row error split them in two and try each half alone."""
        error = self._attempt(rows)
        if error is None:
            return len(rows), 0
        if classify_error(error) != "row":
            self._give_up(rows, error)
            return 0, len(rows)
        if len(rows) == 1:
            self._poison(rows[0], error)
            return 0, 1
        half = len(rows) // 2
        left, right = self._write_bisecting(rows[:half]), self._write_bisecting(rows[half:])
        return left[0] + right[0], left[1] + right[1]

    def _attempt(self, rows: list[Row]) -> BaseException | None:
        for attempt in range(1, self.settings.retry_attempts + 1):
            try:
                write_sync(self._engine, self.target, rows)
            except Exception as exc:  # noqa: BLE001 - classified, retried or set aside below
                if classify_error(exc) != "transient" or attempt == self.settings.retry_attempts:
                    return exc
                log.warning(
                    "data.batch.retry",
                    extra={"writer": self.name, "attempt": attempt, "error": repr(exc)},
                )
                with self._lock:
                    self._counters.retries += 1
                time.sleep(self.settings.backoff(attempt))
                continue
            if self._on_written is not None:
                _call_hook(self._on_written, rows)
            return None
        return None  # pragma: no cover - the loop always returns

    def _poison(self, row: Row, error: BaseException) -> None:
        log.warning("data.batch.poison_row", extra={"writer": self.name, "error": repr(error)})
        if self._on_poison is not None:
            _call_hook(self._on_poison, row, error)

    def _give_up(self, rows: Sequence[Row], error: BaseException) -> None:
        log.error(
            "data.batch.failed",
            extra={"writer": self.name, "rows": len(rows), "error": repr(error)},
        )
        if self._on_failure is not None:
            _call_hook(self._on_failure, rows, error)


def _call_hook(hook: Callable[..., object], *args: Any) -> None:
    """Run a user's hook; its error is logged, never lets the flusher die."""
    try:
        hook(*args)
    except Exception:
        log.exception("data.batch.hook_failed", extra={"hook": getattr(hook, "__name__", "?")})
