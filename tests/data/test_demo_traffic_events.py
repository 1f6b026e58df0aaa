"""The demo's traffic events go through the batch writer: each request the orders service
answers becomes a row of ``demo_traffic_events``, written in batches, counted on
``/metrics``, dropped (and counted) when the buffer is full, and flushed at shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from safeship.db import create_engine
from safeship.demo.traffic import TRAFFIC_EVENTS, TrafficEvents
from safeship.web import protect


def _orders_like() -> FastAPI:
    app = FastAPI()

    @app.get("/customers/{customer}/orders")
    def listing(customer: str) -> list[str]:
        if customer == "broken":
            raise HTTPException(500, "broken")
        return [customer]

    @app.post("/orders", status_code=201)
    def create() -> dict[str, int]:
        return {"id": 1}

    return app


def _rows_counter(metrics: str, outcome: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            labels = {"writer": TRAFFIC_EVENTS, "outcome": outcome}
            if s.name == "safeship_data_batch_rows_total" and s.labels == labels:
                return float(s.value)
    return 0.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    if request.param == "sqlite":
        return create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    return create_engine(request.getfixturevalue("postgres_url"))


def test_requests_land_as_events_in_batches_and_shutdown_flushes(engine: sa.Engine) -> None:
    # max_delay far away and max_rows above the request count: only close() writes them.
    events = TrafficEvents(engine, max_rows=1000, max_delay=60)
    app = protect(events.middleware(_orders_like()), configure_logs=False)
    with TestClient(app) as client:
        before = _rows_counter(client.get("/metrics").text, "flushed")
        for i in range(20):
            client.get(f"/customers/ada-{i}/orders")
        client.get("/customers/broken/orders")
        client.post("/orders")
        with engine.connect() as conn:  # buffered, not yet written
            assert conn.execute(sa.select(sa.func.count()).select_from(events.table)).scalar() == 0
        events.close()
        after = client.get("/metrics").text
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.table.c.method, events.table.c.route, events.table.c.status)
        ).all()
    # 20 listings, a failing one and a create (/metrics is protect()'s, outside).
    assert len(rows) == 22 and events.stats.flushed == 22 and events.stats.flushes == 1
    assert rows.count(("GET", "/customers/{customer}/orders", 200)) == 20
    assert ("GET", "/customers/{customer}/orders", 500) in rows
    assert ("POST", "/orders", 201) in rows
    assert not any("ada-" in route for _, route, _ in rows)  # templates, not paths
    assert _rows_counter(after, "flushed") - before == 22
    engine.dispose()


@pytest.mark.postgres
def test_a_full_buffer_drops_and_counts_instead_of_making_requests_wait(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    events = TrafficEvents(engine, max_rows=5, max_delay=0.01, capacity=5)
    app = events.middleware(_orders_like())
    with engine.connect() as blocker, TestClient(app) as client:
        blocker.begin()  # the writer's COPY waits on this lock: the buffer cannot drain
        blocker.execute(sa.text(f"LOCK TABLE {TRAFFIC_EVENTS} IN ACCESS EXCLUSIVE MODE"))
        answered = [client.get(f"/customers/c{i}/orders").status_code for i in range(30)]
        dropped = events.stats.dropped
        blocker.rollback()
    assert answered == [200] * 30  # every request answered, none waited for the log
    assert dropped >= 20  # at most 5 in flight and 5 buffered
    events.close()
    with engine.connect() as conn:
        written = conn.execute(sa.select(sa.func.count()).select_from(events.table)).scalar()
    assert written == 30 - dropped == events.stats.flushed
    assert events.record("GET", "/late", 200, 0.001) is False  # closed: refused, no error
    engine.dispose()
