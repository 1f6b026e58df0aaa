"""Metrics read from the database when Prometheus scrapes (a custom collector).

Stored state (outbox backlog, flags, rollouts, breakers) lives in the database, not in
one process, so the control plane reads it at scrape time: each slice contributes a
*source*, a function that runs a few cheap, bounded queries on a connection and returns
metric families. Every source runs in its own transaction under a statement timeout
(PostgreSQL: the scrape timeout shared by the sources, so one slow source leaves time
for the others), and the whole reading in a helper thread the scrape waits for at most
``timeout`` seconds: a slow or unreachable database costs one scrape ``timeout`` and a
``safeship_scrape_errors_total`` sample, never a hung scrape or a 500. The connection
pool's own figures are read from the engine without any query, by the same exporter as an
app's ``PoolCollector`` (``safeship_db_pool_*{pool="default"}``, see ``observe._pools``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from safeship.observe._metrics import MetricsConfigError
from safeship.observe._pools import PoolCollector, pool_families, watch_if_known

__all__ = ["DatabaseCollector", "PoolCollector", "ScrapeSource", "pool_families"]

logger = logging.getLogger("safeship.observe")

#: Why a source gave no figures in a scrape (the ``reason`` label of the error counter).
REASONS = ("error", "timeout", "busy")


@dataclass(frozen=True, slots=True)
class ScrapeSource:
    """One slice's stored figures: ``read`` runs its queries on ``conn`` and returns families."""

    name: str
    read: Callable[[sa.Connection], Iterable[Metric]]


@dataclass(slots=True)
class _Reading:
    """What the helper thread has read so far (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    families: list[Metric] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)


class DatabaseCollector:
    """A Prometheus collector that reads ``sources`` from ``engine`` at each scrape."""

    def __init__(
        self, engine: sa.Engine, sources: Sequence[ScrapeSource], *, timeout: float = 2.0
    ) -> None:
        if not 0 < timeout <= 60:
            raise MetricsConfigError(
                f"timeout: the scrape timeout must be in (0, 60] seconds, got {timeout!r}"
            )
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise MetricsConfigError(f"sources: scrape source names must be unique, got {names!r}")
        self.engine = engine
        watch_if_known(engine)  # exhaustion events of the engine's pool, when its limit is known
        self.sources = tuple(sources)
        self.timeout = timeout
        self._errors = {(s, r): 0 for s in names for r in REASONS}
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    def describe(self) -> list[Metric]:
        """Nothing: registering must not query the database (the names vary with the data)."""
        return []

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        with reading.lock:
            yield from reading.families
            seconds = dict(reading.seconds)
        yield from pool_families(self.engine)
        yield self._error_family()
        duration = GaugeMetricFamily(
            "safeship_scrape_duration_seconds",
            "Time the last scrape spent reading each source from the database.",
            labels=["source"],
        )
        for name, value in sorted(seconds.items()):
            duration.add_metric([name], value)
        yield duration

    def _read(self) -> _Reading:
        reading = _Reading()
        with self._lock:
            if self._running is not None and self._running.is_alive():
                self._count_all("busy")  # the previous reading still hangs: do not pile up
                return reading
            self._running = threading.Thread(
                target=self._read_sources, args=(reading,), name="safeship-scrape", daemon=True
            )
            self._running.start()
        if not reading.done.wait(self.timeout):
            with reading.lock:
                late = [s.name for s in self.sources if s.name not in reading.finished]
                reading.finished.update(late)  # whatever arrives later is dropped
            for name in late:
                self._count(name, "timeout")
        return reading

    def _read_sources(self, reading: _Reading) -> None:
        try:
            with self.engine.connect() as conn:
                for source in self.sources:
                    self._read_one(conn, source, reading)
        except Exception as exc:  # noqa: BLE001 - no connection: every unread source failed
            with reading.lock:
                unread = [s.name for s in self.sources if s.name not in reading.finished]
                reading.finished.update(unread)
            for name in unread:
                self._count(name, "error", exc)
        finally:
            reading.done.set()

    def _read_one(self, conn: sa.Connection, source: ScrapeSource, reading: _Reading) -> None:
        started = time.perf_counter()
        try:
            with conn.begin():
                _limit_statements(conn, self.timeout / (len(self.sources) + 1))
                families = list(source.read(conn))
        except Exception as exc:  # one failing source must not hide the others
            if conn.invalidated:
                raise
            with reading.lock:
                late = source.name in reading.finished
                reading.finished.add(source.name)
            if not late:
                self._count(source.name, "error", exc)
            return
        with reading.lock:
            if source.name in reading.finished:  # the scrape gave up waiting
                return
            reading.finished.add(source.name)
            reading.families.extend(families)
            reading.seconds[source.name] = time.perf_counter() - started

    def _count(self, source: str, reason: str, exc: BaseException | None = None) -> None:
        with self._lock:
            self._errors[source, reason] += 1
        logger.warning(
            "metrics.scrape_failed",
            extra={
                "source": source,
                "reason": reason,
                "error": type(exc).__name__ if exc else None,
                "timeout_seconds": self.timeout,
            },
        )

    def _count_all(self, reason: str) -> None:
        for source in self.sources:
            self._errors[source.name, reason] += 1
        logger.warning(
            "metrics.scrape_failed", extra={"source": "*", "reason": reason, "error": None}
        )

    def _error_family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "safeship_scrape_errors",
            "Scrapes in which a source gave no figures: error, timeout, or busy (the "
            "previous reading still running).",
            labels=["source", "reason"],
        )
        with self._lock:
            errors = sorted(self._errors.items())
        for (source, reason), value in errors:
            family.add_metric([source, reason], value)
        return family


def _limit_statements(conn: sa.Connection, timeout: float) -> None:
    """Bound each statement on the server too (PostgreSQL), so a slow query ends there,
    early enough for the sources after it to be read within the scrape's timeout."""
    if conn.dialect.name == "postgresql":
        millis = str(max(1, int(timeout * 1000)))
        conn.execute(sa.text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": millis})
