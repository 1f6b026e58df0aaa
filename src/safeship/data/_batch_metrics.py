"""Prometheus metrics of the batch writers (default registry, created on first use)."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["flushed", "rows"]

_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram

    return {
        "rows": Counter(
            "safeship_data_batch_rows_total",
            "Rows seen by a batch writer, by outcome (buffered, flushed, failed, dropped).",
            ["writer", "outcome"],
        ),
        "size": Histogram(
            "safeship_data_batch_flush_rows",
            "Rows written by one flush.",
            ["writer"],
            buckets=_SIZE_BUCKETS,
        ),
        "seconds": Histogram(
            "safeship_data_batch_flush_seconds",
            "Time one flush took, from taking the rows to the commit.",
            ["writer"],
            buckets=_SECONDS_BUCKETS,
        ),
    }


def rows(writer: str, outcome: str, count: int) -> None:
    if count:
        _metrics()["rows"].labels(writer, outcome).inc(count)


def flushed(writer: str, size: int, seconds: float) -> None:
    m = _metrics()
    m["size"].labels(writer).observe(size)
    m["seconds"].labels(writer).observe(seconds)
