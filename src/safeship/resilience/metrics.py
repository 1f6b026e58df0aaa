"""Prometheus metrics for circuit breakers, read at scrape time.

Breakers count outcomes in plain integers on their hot path; this collector turns the
registered breakers' figures into metric families only when Prometheus scrapes, so
metrics cost the calls nothing:

* ``safeship_breaker_state{breaker,state}`` — 1 for the current state, 0 for the others
* ``safeship_breaker_calls_total{breaker,outcome}`` — success, failure, slow_success,
  slow_failure, ignored
* ``safeship_breaker_rejected_total{breaker}``
* ``safeship_breaker_transitions_total{breaker,from_state,to_state}``

The collector joins prometheus-client's default registry when the first breaker is
created; use :class:`BreakerCollector` to register it with another registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from safeship.resilience import registry
from safeship.resilience.breaker_types import State

__all__ = ["BreakerCollector", "install_default_collector"]

_installed = False
_install_lock = threading.Lock()


class BreakerCollector(Collector):
    """Exports every registered breaker's state and counters when scraped."""

    def collect(self) -> Iterator[Metric]:
        """Build the four metric families from the registry."""
        state = GaugeMetricFamily(
            "safeship_breaker_state",
            "Circuit breaker state (1 = current).",
            labels=["breaker", "state"],
        )
        calls = CounterMetricFamily(
            "safeship_breaker_calls",
            "Calls through a circuit breaker by outcome.",
            labels=["breaker", "outcome"],
        )
        rejected = CounterMetricFamily(
            "safeship_breaker_rejected", "Calls a circuit breaker rejected.", labels=["breaker"]
        )
        moves = CounterMetricFamily(
            "safeship_breaker_transitions",
            "Circuit breaker state transitions.",
            labels=["breaker", "from_state", "to_state"],
        )
        for breaker in registry.all_breakers():
            current = breaker.state
            for option in State:
                state.add_metric([breaker.name, option.value], 1.0 if option is current else 0.0)
            counts = breaker.counts()
            rejected.add_metric([breaker.name], counts.pop("rejected"))
            for outcome, value in counts.items():
                calls.add_metric([breaker.name, outcome], value)
            for (old, new), value in breaker.transition_counts().items():
                moves.add_metric([breaker.name, old.value, new.value], value)
        yield from (state, calls, rejected, moves)


def install_default_collector(target: CollectorRegistry = REGISTRY) -> None:
    """Register one :class:`BreakerCollector` with ``target`` (idempotent for the default)."""
    global _installed
    with _install_lock:
        if _installed and target is REGISTRY:
            return
        target.register(BreakerCollector())
        if target is REGISTRY:
            _installed = True
