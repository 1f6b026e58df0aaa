"""Prometheus metrics for circuit breakers, read at scrape time.

Breakers count outcomes in plain integers on their hot path; this collector turns the
registered breakers' figures into metric families only when Prometheus scrapes, so
metrics cost the calls nothing:

* ``safeship_breaker_state{breaker,state}`` — 1 for the current state, 0 for the others
* ``safeship_breaker_calls_total{breaker,outcome}`` — success, failure, slow_success,
  slow_failure, ignored
* ``safeship_breaker_rejected_total{breaker}``
* ``safeship_breaker_transitions_total{breaker,from_state,to_state}``

The collector joins prometheus-client's default registry when the first breaker joins
the default breaker registry (:func:`install_on_registration` listens for that); use
:class:`BreakerCollector` to export a breaker registry to another Prometheus registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from safeship.resilience._breaker_types import State
from safeship.resilience._registry import DEFAULT_REGISTRY, BreakerRegistry, Registrable

__all__ = ["BreakerCollector", "install_default_collector", "install_on_registration"]

_installed = False
_install_lock = threading.Lock()


class BreakerCollector(Collector):
    """Exports the state and counters of every breaker in ``breakers`` when scraped."""

    def __init__(self, breakers: BreakerRegistry | None = None) -> None:
        self.breakers = breakers if breakers is not None else DEFAULT_REGISTRY

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
        breaker: Registrable
        for breaker in self.breakers.all():
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


def install_on_registration(breakers: BreakerRegistry, breaker: object) -> None:
    """A registry listener: the first breaker of the default registry installs metrics."""
    if breakers is DEFAULT_REGISTRY and not _installed:
        install_default_collector()
