"""The demo's catalogue lookup is cached and its figures reach /metrics."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from safeship.demo.inventory import CATALOGUE, catalogue_entry, inventory_policy


def test_the_demo_serves_repeat_catalogue_lookups_from_the_cache() -> None:
    before = CATALOGUE.snapshot()
    catalogue_entry("widget-cache-test")
    catalogue_entry("widget-cache-test")
    after = CATALOGUE.snapshot()
    assert after["loads"] - before["loads"] == 1
    assert after["hits"] - before["hits"] == 1
    inventory_policy()
    inventory_policy()  # registers the collector once
    assert 'safeship_cache_events_total{event="hits",namespace="demo-catalogue"}' in (
        generate_latest(REGISTRY).decode()
    )
