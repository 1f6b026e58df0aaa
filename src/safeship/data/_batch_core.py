"""What the sync and async batch writers share: settings, row shape, error classes, stats.

No I/O here.  A writer buffers rows (tuples in column order), takes up to ``max_rows`` at a
time, and hands them to a write function; when that fails with an error a row can cause
(a constraint, a bad value) the batch is bisected until the offending rows stand alone.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from safeship.data._errors import BatchConfigError, BatchRowError
from safeship.resilience.presets.db import sqlstate_of

__all__ = [
    "Backpressure",
    "BatchSettings",
    "BatchStats",
    "ErrorKind",
    "RowBuffer",
    "classify_error",
    "dedupe_last",
    "normalise_row",
    "normalise_rows",
]

Backpressure = Literal["await", "block", "drop"]
ErrorKind = Literal["row", "transient", "fatal"]
Row = tuple[Any, ...]

#: SQLSTATE classes a single row can cause: data exception, integrity constraint violation.
_ROW_CLASSES = ("22", "23")
#: SQLSTATEs worth retrying as they are: conflicts, lock timeout, connection and resources.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_CODES = frozenset({"55P03"})
_ROW_ERROR_NAMES = frozenset({"IntegrityError", "DataError"})


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """A writer's limits, checked once at construction."""

    max_rows: int = 1000
    max_delay: float = 0.02
    capacity: int = 10_000
    retry_attempts: int = 5
    retry_base: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.max_rows <= 100_000:
            raise BatchConfigError(f"max_rows must be 1..100000, got {self.max_rows!r}")
        if not (math.isfinite(self.max_delay) and 0 < self.max_delay <= 60):
            raise BatchConfigError(f"max_delay must be in (0, 60] seconds, got {self.max_delay!r}")
        if not self.max_rows <= self.capacity <= 10_000_000:
            raise BatchConfigError(
                f"capacity must be max_rows..10000000 rows, got {self.capacity!r} "
                f"(max_rows={self.max_rows})"
            )
        if not 1 <= self.retry_attempts <= 100:
            raise BatchConfigError(f"retry_attempts must be 1..100, got {self.retry_attempts!r}")
        if not (math.isfinite(self.retry_base) and 0 <= self.retry_base <= 10):
            raise BatchConfigError(f"retry_base must be 0..10 seconds, got {self.retry_base!r}")

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): doubling from ``retry_base``, 5 s cap."""
        return float(min(5.0, self.retry_base * 2 ** (attempt - 1)))


def check_backpressure(mode: object, allowed: tuple[str, ...]) -> Backpressure:
    if mode not in allowed:
        raise BatchConfigError(
            f"backpressure must be chosen explicitly, one of {', '.join(allowed)}; got {mode!r}"
        )
    return mode  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counters of one writer since it started."""

    buffered: int = 0
    flushed: int = 0
    failed: int = 0
    dropped: int = 0
    flushes: int = 0
    pending: int = 0
    retries: int = 0


def normalise_row(row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str]) -> Row:
    """``row`` as a tuple in column order, or :class:`BatchRowError` saying what is off."""
    if type(row) is tuple and len(row) == len(columns):
        return row  # the common case, checked without the cost of the ABC checks below
    if isinstance(row, Mapping):
        unknown = set(row) - set(columns)
        if unknown:
            raise BatchRowError(f"row has unknown column(s) {sorted(unknown)}; columns: {columns}")
        return tuple(row.get(c) for c in columns)
    if isinstance(row, str | bytes) or not isinstance(row, Sequence):
        raise BatchRowError(f"a row is a mapping or a sequence, got {type(row).__name__}")
    if len(row) != len(columns):
        raise BatchRowError(f"row has {len(row)} value(s), the writer has {len(columns)} columns")
    return tuple(row)


def normalise_rows(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]
) -> list[Row]:
    """Every row as :func:`normalise_row` makes it, checked before any is returned.

    Rows that are already tuples of the right length (the bulk case) are checked with two
    passes in C (``countOf`` over ``map(type, ...)`` and ``map(len, ...)``, an identity
    test per row, no hashing) instead of one call per row."""
    values = rows if type(rows) is list else list(rows)
    count = len(values)
    if (
        operator.countOf(map(type, values), tuple) == count
        and operator.countOf(map(len, values), len(columns)) == count
    ):
        return values  # type: ignore[return-value]
    return [normalise_row(row, columns) for row in values]


class RowBuffer:
    """Buffered rows in arrival order, and when each run of them arrived.

    A run is one ``put`` or one ``put_many`` chunk: buffering and taking cost a list
    ``extend`` / slice per run, not Python work per row, and the oldest row's arrival
    time (what ``max_delay`` is measured from) stays exact."""

    __slots__ = ("_arrivals", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self._arrivals: deque[list[Any]] = deque()  # [arrival time, rows left of the run]

    def __len__(self) -> int:
        return len(self.rows)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def add(self, now: float, row: Row) -> None:
        self.rows.append(row)
        self._arrivals.append([now, 1])

    def extend(self, now: float, rows: list[Row]) -> None:
        if rows:
            self.rows.extend(rows)
            self._arrivals.append([now, len(rows)])

    @property
    def oldest(self) -> float:
        """When the oldest buffered row arrived (the buffer must not be empty)."""
        return float(self._arrivals[0][0])

    def take(self, count: int) -> list[Row]:
        """Remove and return the ``count`` oldest rows."""
        if count >= len(self.rows):  # all of them: hand the list over instead of copying it
            batch, self.rows = self.rows, []
            self._arrivals.clear()
            return batch
        batch = self.rows[:count]
        del self.rows[:count]
        left = len(batch)
        arrivals = self._arrivals
        while left:
            run = arrivals[0]
            if run[1] <= left:
                left -= run[1]
                arrivals.popleft()
            else:
                run[1] -= left
                left = 0
        return batch


def dedupe_last(rows: Sequence[Row], key: Sequence[int]) -> Sequence[Row]:
    """Keep the last row per conflict key: one statement may not update a row twice.

    Without a key the rows are returned as they are (not copied)."""
    if not key:
        return rows
    latest: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        latest[tuple(row[i] for i in key)] = row
    return list(latest.values())


def classify_error(exc: BaseException) -> ErrorKind:
    """``row`` when a row may cause it (bisect), ``transient`` to retry, else ``fatal``."""
    code = sqlstate_of(exc)
    if code is not None:
        if code[:2] in _ROW_CLASSES:
            return "row"
        if code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES:
            return "transient"
        return "fatal"
    current: BaseException | None = exc
    for _ in range(20):  # a cause chain is short; the bound guards against a cycle
        if current is None:
            break
        if type(current).__name__ in _ROW_ERROR_NAMES:
            return "row"
        if isinstance(current, ConnectionError | TimeoutError | OSError):
            return "transient"
        if type(current).__name__ in {"OperationalError", "InterfaceError"}:
            return "transient"
        current = getattr(current, "orig", None) or current.__cause__
    return "fatal"
