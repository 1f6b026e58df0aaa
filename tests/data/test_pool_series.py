"""One reader, one exporter of the pool series: an app's ``PoolCollector`` (SQLAlchemy,
psycopg_pool, asyncpg) and the control plane's ``/metrics`` give the same
``safeship_db_pool_*{pool}`` families, with exhaustion events of the plane's own pool."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import safeship.data
import safeship.observe._pools
import safeship.observe.scrape
from safeship.db import create_engine
from safeship.server import create_app
from tests.server.support import make_settings, read_headers

FAMILIES = {
    "safeship_db_pool_connections",
    "safeship_db_pool_size",
    "safeship_db_pool_max_connections",
    "safeship_db_pool_overflow",
    "safeship_db_pool_waiting",
    "safeship_db_pool_wait_seconds_total",
    "safeship_db_pool_exhausted_total",
}


def _pool_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("safeship_db_pool_"):
            for s in family.samples:
                found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def _help_lines(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]


def test_the_app_and_the_data_layer_export_through_one_collector() -> None:
    assert safeship.data.PoolCollector is safeship.observe.scrape.PoolCollector
    assert safeship.data.pool_stats is safeship.observe._pools.pool_stats


def test_the_control_planes_metrics_carry_its_pool_once_with_exhaustion(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    settings = make_settings(url)
    engine = create_engine(url, settings=settings)
    configured = safeship.data.pool_stats(engine)
    assert configured.max_size is not None and configured.min_size is not None
    limit = configured.max_size  # SQLite file: SQLAlchemy's QueuePool, 5 + 10
    app = create_app(settings, engine=engine, sample_interval=None)
    with TestClient(app) as client:
        before = client.get("/metrics", headers=read_headers()).text
        held = [engine.connect() for _ in range(limit)]  # the last one empties the pool
        try:
            busy = client.get("/metrics", headers=read_headers()).text
        finally:
            for conn in held:
                conn.close()
    names = [n for n in _help_lines(busy) if n.startswith("safeship_db_pool_")]
    assert sorted(names) == sorted(FAMILIES)  # each family once: one exporter
    pool = (("pool", "default"),)
    first, now = _pool_samples(before), _pool_samples(busy)
    assert now["safeship_db_pool_max_connections", pool] == limit
    assert now["safeship_db_pool_size", pool] == configured.min_size == 5
    in_use = ("safeship_db_pool_connections", (("pool", "default"), ("state", "in_use")))
    assert now[in_use] == limit
    exhausted = "safeship_db_pool_exhausted_total", pool
    assert now[exhausted] >= first[exhausted] + 1


@pytest.mark.postgres
async def test_psycopg_pool_and_asyncpg_pools_give_the_same_series(postgres_url: str) -> None:
    import asyncpg
    import psycopg_pool

    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    engine = create_engine(postgres_url)
    apg = await asyncpg.create_pool(conninfo, min_size=1, max_size=3)
    with psycopg_pool.ConnectionPool(conninfo, min_size=2, max_size=4, open=True) as pg_pool:
        pg_pool.wait(10)
        collector = safeship.data.PoolCollector({"api": engine, "batch": pg_pool})
        collector.add("events", apg)
        registry = CollectorRegistry()
        registry.register(collector)
        done = threading.Event()
        with pg_pool.connection():
            text = generate_latest(registry).decode()
            done.set()
    await apg.close()
    engine.dispose()
    samples = _pool_samples(text)
    assert sorted(n for n in _help_lines(text)) == sorted(FAMILIES)
    assert samples["safeship_db_pool_max_connections", (("pool", "batch"),)] == 4
    assert samples["safeship_db_pool_size", (("pool", "batch"),)] == 2
    state = (("pool", "batch"), ("state", "in_use"))
    assert samples["safeship_db_pool_connections", state] == 1
    assert samples["safeship_db_pool_waiting", (("pool", "batch"),)] == 0
    assert samples["safeship_db_pool_size", (("pool", "events"),)] == 1
    assert samples["safeship_db_pool_max_connections", (("pool", "events"),)] == 3
    # safeship's engine is watched (its limit is known): exhaustion is counted, from 0.
    assert samples["safeship_db_pool_exhausted_total", (("pool", "api"),)] == 0
    assert done.is_set()
