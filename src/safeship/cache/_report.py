"""This process's cache figures, reported to the control plane's database.

The control plane runs in another process than the services that cache, so it cannot read
their counters. A :class:`CacheReporter` runs in each service process (``reporter.start()``
or ``with CacheReporter(...)``; the constructor does no I/O): every ``interval`` seconds,
off the hot path, it writes the cumulative counters of every live cache of the process,
summed by namespace, into the plane's sample history (``safeship_samples``, kind
``cache``, subject ``service/instance/namespace``, one row per counter and time bucket).
The plane's overview turns the rows into hits, misses, hit ratio, stale served and errors
per namespace, and a hit-ratio chart. Rows age out with the plane's sample retention.

A database outage only pauses reporting; the caches never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from safeship.cache._stats import live_totals

if TYPE_CHECKING:
    import sqlalchemy as sa

    from safeship.server._samples import Point, Sampler

logger = logging.getLogger("safeship.cache")

__all__ = ["REPORTED", "CacheReporter"]

#: The counters a reporter writes, per namespace.
REPORTED = ("hits", "misses", "stale_served", "errors")
#: The most namespaces one process reports (the rest are left out, and logged once).
MAX_NAMESPACES = 100


class CacheReporter:
    """Reports this process's per-namespace cache counters to the control plane's
    database, in a daemon thread. ``service`` and ``instance`` name the process on the
    dashboard (``instance`` defaults to ``host:pid``)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        service: str,
        instance: str | None = None,
        interval: float = 10.0,
        retention: timedelta = timedelta(hours=24),
        clock: Callable[[], float] = time.time,
    ) -> None:
        from safeship.resilience.board import default_instance
        from safeship.server._samples import Sampler

        if not service or len(service) > 100 or "/" in service:
            raise ValueError("service: a name of 1-100 characters without '/', e.g. 'orders'")
        instance = instance or default_instance()
        if len(instance) > 200 or "/" in instance:
            raise ValueError("instance: at most 200 characters, no '/'")
        self.engine = engine
        self.service = service
        self.instance = instance
        self.interval = interval
        self._sampler: Sampler = Sampler(
            engine, self.points, interval=interval, retention=retention, clock=clock
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_overflow = False
        self.last_error: str | None = None

    def points(self) -> list[Point]:
        """This process's counters now, one point per namespace and counter."""
        from safeship.server._samples import Point

        totals = sorted(live_totals().items())
        if len(totals) > MAX_NAMESPACES and not self._warned_overflow:
            self._warned_overflow = True
            logger.warning("cache.report_namespaces_capped", extra={"count": len(totals)})
        prefix = f"{self.service}/{self.instance}/"
        return [
            Point("cache", prefix + namespace, name, float(figures[name]))
            for namespace, figures in totals[:MAX_NAMESPACES]
            for name in REPORTED
        ]

    def report_once(self) -> None:
        """Write this bucket's counters; a database error only pauses reporting."""
        from sqlalchemy.exc import SQLAlchemyError  # the reporter is the only part needing it

        try:
            self._sampler.sample_once()
        except SQLAlchemyError as exc:
            if self.last_error is None:
                logger.warning("cache.report_failed", extra={"error": type(exc).__name__})
            self.last_error = type(exc).__name__
        else:
            self.last_error = None

    def start(self) -> None:
        """Start the reporting thread; calling it again while it runs does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safeship-cache", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Report one last time and stop the thread (waits at most one interval and 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self.report_once()
            stop.wait(self.interval)
        self.report_once()

    def __enter__(self) -> CacheReporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CacheReporter:
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.close)
