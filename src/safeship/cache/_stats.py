"""Per-namespace cache figures, counted with plain integers on the hot path and exported
to Prometheus at scrape time by :class:`CacheCollector` (no label lookup per hit)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["EVENTS", "CacheCollector", "Stats", "live_totals", "register_stats"]

#: The ``event`` label values of ``safeship_cache_events_total``.
EVENTS = (
    "hits",
    "misses",
    "loads",
    "coalesced",
    "lock_waits",
    "early_refreshes",
    "stale_served",
    "errors",
    "degraded",
)


class Stats:
    """Counters of one cache. Increments are plain ``+=`` (cheap; under heavy threading a
    rare increment may be lost, which a ratio on a dashboard tolerates)."""

    __slots__ = (
        "__weakref__", "coalesced", "degraded", "early_refreshes", "errors", "hits",
        "loads", "lock_waits", "misses", "namespace", "stale_served",
    )  # fmt: skip

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.hits = self.misses = self.loads = self.coalesced = self.lock_waits = 0
        self.early_refreshes = self.stale_served = self.errors = self.degraded = 0

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {event: getattr(self, event) for event in EVENTS}
        looked = self.hits + self.misses
        figures["hit_ratio"] = self.hits / looked if looked else None
        figures["namespace"] = self.namespace
        return figures


_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LOCK = threading.Lock()


def register_stats(owner: Any) -> None:
    """Make ``owner`` (anything with a ``stats`` and ``memory`` attribute) visible to the
    collector for as long as it lives."""
    with _LOCK:
        _LIVE.add(owner)


def live_totals() -> dict[str, dict[str, float]]:
    """Every live cache's counters summed by namespace, with the memory tier's entries
    (``n``) and bytes (``b``)."""
    totals: dict[str, dict[str, float]] = {}
    with _LOCK:
        owners = list(_LIVE)
    for owner in owners:
        stats, memory = owner.stats, owner.memory
        bucket = totals.setdefault(stats.namespace, dict.fromkeys((*EVENTS, "n", "b"), 0.0))
        for event in EVENTS:
            bucket[event] += getattr(stats, event)
        bucket["n"] += len(memory) if memory is not None else 0
        bucket["b"] += memory.bytes if memory is not None else 0
    return totals


class CacheCollector:
    """Prometheus collector over every live cache: ``safeship_cache_events_total`` by
    namespace and event, and the memory tier's entries and bytes. Register it once:
    ``REGISTRY.register(CacheCollector())``."""

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "safeship_cache_events", "Cache events by namespace.", labels=["namespace", "event"]
        )
        entries = GaugeMetricFamily(
            "safeship_cache_memory_entries", "Entries in the memory tier.", labels=["namespace"]
        )
        size = GaugeMetricFamily(
            "safeship_cache_memory_bytes", "Bytes in the memory tier.", labels=["namespace"]
        )
        totals = live_totals()
        for namespace, bucket in sorted(totals.items()):
            for event in EVENTS:
                events.add_metric([namespace, event], bucket[event])
            entries.add_metric([namespace], bucket["n"])
            size.add_metric([namespace], bucket["b"])
        yield from (events, entries, size)
