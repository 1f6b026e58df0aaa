"""HTTP request metrics: requests by method, route and status, latency, in progress.

In one process the counts are plain integers kept per thread and summed by a collector
when Prometheus scrapes, so recording a request takes no lock and no label lookup in
prometheus_client. With ``PROMETHEUS_MULTIPROC_DIR`` set they are prometheus_client
metrics instead, whose values live in the files every worker writes. Both expose the
same families:

- ``safeship_http_requests_total{method, route, status}``
- ``safeship_http_request_duration_seconds{method, route}`` (histogram)
- ``safeship_http_requests_in_progress``
"""

from __future__ import annotations

import collections
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

REQUESTS_NAME = "safeship_http_requests"
DURATION_NAME = "safeship_http_request_duration_seconds"
IN_PROGRESS_NAME = "safeship_http_requests_in_progress"
REQUESTS_HELP = "HTTP requests handled, by method, route template and status code."
DURATION_HELP = "Time from request start to the end of the response body, in seconds."
IN_PROGRESS_HELP = "HTTP requests currently being handled."

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
#: Distinct (method, route, status) series kept per thread; past it, requests are
#: counted under route ``overflow`` so a label explosion cannot exhaust memory.
MAX_SERIES = 10_000
OVERFLOW_ROUTE = "overflow"


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.005``, ``10.0``, ``+Inf``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _request_counts(families: Iterable[Metric]) -> collections.Counter[tuple[str, str, int]]:
    """The ``safeship_http_requests_total`` samples of ``families``, by their labels."""
    totals: collections.Counter[tuple[str, str, int]] = collections.Counter()
    for family in families:
        for sample in family.samples:
            if sample.name == REQUESTS_NAME + "_total":
                labels = sample.labels
                totals[(labels["method"], labels["route"], int(labels["status"]))] += int(
                    sample.value
                )
    return totals


class HttpMetrics(Protocol):
    """What the middleware records for each request."""

    def started(self) -> object:
        """A request began; the result goes to `finished`."""

    def finished(
        self, method: str, route: str, status: int, duration: float, begun: object = None
    ) -> None:
        """A request ended with ``status`` after ``duration`` seconds."""


class _ThreadCounts:
    """The counts one thread recorded: rows of [count, sum, bucket counts...]."""

    __slots__ = ("in_progress", "rows")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, int], list[Any]] = {}
        self.in_progress = 0


class ProcessHttpMetrics:
    """HTTP metrics of this process, recorded without locks and collected at scrape time.

    Each thread records into its own counts, so two event loops in two threads never
    lose an update; a scrape sums every thread's counts.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or bounds[-1] == float("inf"):
            raise ValueError("buckets must be finite, increasing and non-empty")
        self.buckets = bounds
        self._width = len(bounds) + 1  # the last bucket is +Inf
        self._local = threading.local()
        self._threads: list[_ThreadCounts] = []
        self._lock = threading.Lock()

    def _counts(self) -> _ThreadCounts:
        try:
            counts: _ThreadCounts = self._local.counts
        except AttributeError:
            counts = self._local.counts = _ThreadCounts()
            with self._lock:
                self._threads.append(counts)
        return counts

    def started(self) -> _ThreadCounts:
        """A request began: returns this thread's counts, for `finished`."""
        try:
            counts: _ThreadCounts = self._local.counts
        except AttributeError:
            counts = self._counts()
        counts.in_progress += 1
        return counts

    def finished(
        self, method: str, route: str, status: int, duration: float, begun: object = None
    ) -> None:
        """A request ended: count it and put its duration in its bucket.

        ``begun`` is what `started` returned for it (the counts of the thread it began
        on, spared a lookup); None looks them up.
        """
        counts = begun if type(begun) is _ThreadCounts else self._counts()
        counts.in_progress -= 1
        self.observe(method, route, status, duration, counts)

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        counts: _ThreadCounts | None = None,
    ) -> None:
        """Count one finished request (``in_progress`` unchanged)."""
        if method not in KNOWN_METHODS:
            method = "OTHER"
        rows = (counts or self._counts()).rows
        row = rows.get((method, route, status))
        if row is None:
            row = self._new_row(rows, method, route, status)
        row[0] += 1
        row[1] += duration
        row[2 + bisect_left(self.buckets, duration)] += 1

    def _new_row(
        self, rows: dict[tuple[str, str, int], list[Any]], method: str, route: str, status: int
    ) -> list[Any]:
        if len(rows) >= MAX_SERIES:
            route = OVERFLOW_ROUTE
        row = rows.get((method, route, status))
        if row is None:
            row = rows[(method, route, status)] = [0, 0.0] + [0] * self._width
        return row

    def snapshot(self) -> collections.Counter[tuple[str, str, int]]:
        """Requests counted so far, by (method, route, status) (for tests and tools)."""
        return _request_counts(self.collect())

    def collect(self) -> Iterator[Metric]:
        """The three metric families, summed over every thread."""
        totals: dict[tuple[str, str, int], list[Any]] = {}
        in_progress = 0
        with self._lock:
            threads = list(self._threads)
        for counts in threads:
            in_progress += counts.in_progress
            for key, row in list(counts.rows.items()):
                snapshot = list(row)
                total = totals.get(key)
                if total is None:
                    totals[key] = snapshot
                else:
                    for index, value in enumerate(snapshot):
                        total[index] += value
        requests = CounterMetricFamily(
            REQUESTS_NAME, REQUESTS_HELP, labels=["method", "route", "status"]
        )
        by_route: dict[tuple[str, str], list[Any]] = {}
        for (method, route, status), row in sorted(totals.items()):
            requests.add_metric([method, route, str(status)], row[0])
            merged = by_route.setdefault((method, route), [0, 0.0] + [0] * self._width)
            for index, value in enumerate(row):
                merged[index] += value
        duration = HistogramMetricFamily(DURATION_NAME, DURATION_HELP, labels=["method", "route"])
        for (method, route), row in by_route.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.buckets, float("inf")), row[2:], strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            duration.add_metric([method, route], buckets, sum_value=row[1])
        yield requests
        yield duration
        yield GaugeMetricFamily(IN_PROGRESS_NAME, IN_PROGRESS_HELP, value=in_progress)


class SharedHttpMetrics:
    """HTTP metrics as prometheus_client metrics (multiprocess mode: values in files)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.requests = Counter(
            REQUESTS_NAME, REQUESTS_HELP, ["method", "route", "status"], registry=None
        )
        self.duration = Histogram(
            DURATION_NAME, DURATION_HELP, ["method", "route"], buckets=buckets, registry=None
        )
        self.in_progress = Gauge(
            IN_PROGRESS_NAME, IN_PROGRESS_HELP, multiprocess_mode="livesum", registry=None
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def started(self) -> None:
        """A request began."""
        self.in_progress.inc()

    def finished(
        self, method: str, route: str, status: int, duration: float, begun: object = None
    ) -> None:
        """A request ended."""
        self.in_progress.dec()
        self.observe(method, route, status, duration)

    def observe(self, method: str, route: str, status: int, duration: float) -> None:
        """Count one finished request (``in_progress`` unchanged)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            label = method if method in KNOWN_METHODS else "OTHER"
            children = (
                self.requests.labels(label, route, str(status)),
                self.duration.labels(label, route),
            )
            if len(self._children) < MAX_SERIES:
                self._children[key] = children
        children[0].inc()
        children[1].observe(duration)

    def snapshot(self) -> collections.Counter[tuple[str, str, int]]:
        """Requests this process counted, by (method, route, status)."""
        return _request_counts(self.requests.collect())

    def collect(self) -> Iterator[Metric]:
        """The three metric families (this process's values)."""
        yield from self.requests.collect()
        yield from self.duration.collect()
        yield from self.in_progress.collect()
