"""Prometheus metrics of a worker (default registry, created on first use): jobs started,
finished by outcome, rescued, their wait and run times."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["JobMetrics"]

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300)


@cache
def _families() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram

    return {
        "started": Counter(
            "safeship_jobs_started_total", "Job attempts started.", ["task", "queue"]
        ),
        "finished": Counter(
            "safeship_jobs_finished_total",
            "Job attempts ended, by where the job went (succeeded, pending = retried, dead, "
            "cancelled, interrupted, lost = fenced out).",
            ["task", "queue", "state"],
        ),
        "rescued": Counter("safeship_jobs_rescued_total", "Orphaned jobs rescued."),
        "wait": Histogram(
            "safeship_jobs_wait_seconds", "Enqueue to start.", ["queue"], buckets=_BUCKETS
        ),
        "run": Histogram(
            "safeship_jobs_run_seconds", "Run time of an attempt.", ["task"], buckets=_BUCKETS
        ),
    }


class JobMetrics:
    """Pass ``metrics=JobMetrics()`` to a worker to export its counters."""

    def __init__(self) -> None:
        self._m = _families()

    def started(self, task: str, queue: str, waited: float) -> None:
        self._m["started"].labels(task, queue).inc()
        self._m["wait"].labels(queue).observe(max(0.0, waited))

    def finished(self, task: str, queue: str, state: str, seconds: float) -> None:
        self._m["finished"].labels(task, queue, state).inc()
        self._m["run"].labels(task).observe(seconds)

    def rescued(self) -> None:
        self._m["rescued"].inc()
