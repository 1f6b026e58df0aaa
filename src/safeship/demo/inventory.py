"""A flaky "inventory" dependency for the demo, and the breaker that protects orders from it.

The dependency fails during outages: every ``cycle`` seconds for ``outage`` seconds, and
whenever the ``demo.inventory-outage`` flag is on (flip it on the dashboard to watch the
breaker open, then off to watch it recover).  While the breaker is open, orders are still
accepted and marked for a later stock check, instead of failing or waiting.

Each reservation also looks its item up in a slow catalogue (20 ms), memoized by
``safeship.cache``: repeats are served from memory; the figures are exported as
``safeship_cache_events_total{namespace="demo-catalogue"}`` on ``/metrics`` and reported
(``CacheReporter`` in ``run``) to the dashboard's Caches card, with the hit ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY

from safeship.cache import Cache, CacheCollector
from safeship.flags.live import FlagClient
from safeship.resilience import (
    Breaker,
    ConsecutiveFailures,
    Fallback,
    Pipeline,
    default_registry,
    pipeline,
)

OUTAGE_FLAG = "demo.inventory-outage"
CATALOGUE = Cache("demo-catalogue", ttl=30.0, max_entries=1_000, stale_if_error=300.0)
_collector: list[CacheCollector] = []


@CATALOGUE(ttl=30.0)
def catalogue_entry(item: str) -> dict[str, str]:
    """The catalogue's record of ``item`` (a slow lookup, cached)."""
    time.sleep(0.02)
    return {"item": item, "warehouse": "eu-1"}


class InventoryDownError(ConnectionError):
    """The inventory service did not answer."""


class FlakyInventory:
    """Answers stock checks, except during outages."""

    def __init__(
        self,
        flags: FlagClient,
        *,
        cycle: float = 90.0,
        outage: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flags = flags
        self.cycle = cycle
        self.outage = outage
        self.clock = clock
        self.started = clock()

    def down(self) -> bool:
        in_outage = (self.clock() - self.started) % self.cycle >= self.cycle - self.outage
        return in_outage or self.flags.is_enabled(OUTAGE_FLAG)

    def reserve(self, item: str, quantity: int) -> str:
        if self.down():
            raise InventoryDownError(f"inventory did not answer for {item}")
        catalogue_entry(item)
        return "reserved"


def inventory_policy() -> Pipeline:
    """Breaker (3 failures in a row, open 5 s) with a fallback that accepts the order."""
    if not _collector:  # the catalogue cache's figures on /metrics, registered once
        _collector.append(CacheCollector())
        REGISTRY.register(_collector[0])
    breaker = Breaker(
        "inventory",
        window=ConsecutiveFailures(3),
        open_duration=5.0,
        half_open_calls=1,
        registry=default_registry,
    )
    return pipeline(fallback=Fallback("stock check pending"), breaker=breaker)
