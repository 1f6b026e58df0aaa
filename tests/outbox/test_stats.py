"""Stats in flight and delivered per second (reported by relays' heartbeats), and the
dashboard's backlog history: the ring, the history endpoint, the chart on the page."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safeship.outbox import NewEvent, Relay, RelayConfig, admin, stage_many
from safeship.outbox._history import BacklogHistory, chart_points
from safeship.outbox._model import DeliveryRate, Event, Outcome, Status
from tests.server.support import ADMIN_KEY, make_settings, read_headers

from .conftest import wait_until


class GatedSink:
    """Holds every batch until ``gate`` is set, then delivers it."""

    ordered = False

    def __init__(self) -> None:
        self.gate = threading.Event()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self.gate.set()

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        await asyncio.to_thread(self.gate.wait, 30)
        return [Outcome(Status.DELIVERED) for _ in events]


def _stage(engine: sa.Engine, count: int) -> None:
    events = [
        NewEvent(aggregate_type="order", aggregate_id=f"k{i}", type="created", payload=i)
        for i in range(count)
    ]
    with engine.begin() as conn:
        stage_many(conn, events)


def _stats_reading(**overrides: float) -> admin.OutboxStats:
    values: dict[str, float] = {
        "pending": 0,
        "retrying": 0,
        "dead": 0,
        "oldest_age_seconds": 0.0,
        "relays": 0,
        "leased_partitions": 0,
        "published_total": 0,
        "in_flight": 0,
        "delivered_per_second": 0.0,
        **overrides,
    }
    return admin.OutboxStats(**values)  # type: ignore[arg-type]


# -- pure pieces ------------------------------------------------------------------------


def test_delivery_rate_covers_the_window_and_survives_idle_close_readings() -> None:
    rate = DeliveryRate(window=10.0)
    assert rate.observe(0.0, 0) == 0.0
    assert rate.observe(1.0, 100) == pytest.approx(100.0)
    # Heartbeats 0.1 s apart with nothing new do not drop the rate to zero.
    assert rate.observe(1.1, 100) == pytest.approx(100 / 1.1)
    assert rate.observe(5.0, 500) == pytest.approx(100.0)
    # Old readings leave the window: only the last one before its start is kept.
    assert rate.observe(20.0, 500) == pytest.approx(0.0)  # since t=5, the window's anchor
    assert rate.observe(21.0, 600) == pytest.approx(100 / 16)
    assert rate.observe(30.0, 600) == pytest.approx(100 / 10)  # anchor now t=20
    # A counter that goes back (a restart under the same id) starts over.
    assert rate.observe(22.0, 10) == 0.0
    with pytest.raises(ValueError, match="window"):
        DeliveryRate(window=0)


def test_history_samples_at_most_every_interval_and_keeps_the_last_n() -> None:
    now = [1000.0]
    ring = BacklogHistory(capacity=3, min_interval=4.0, clock=lambda: now[0])
    reads = []

    def read() -> admin.OutboxStats:
        reads.append(now[0])
        return _stats_reading(pending=len(reads), dead=1)

    assert ring.sample(read) is True
    assert ring.sample(read) is False  # too soon: stats not even read
    assert ring.offer(_stats_reading(pending=99)) is False
    for _ in range(4):
        now[0] += 4.0
        assert ring.sample(read) is True
    assert len(reads) == 5
    samples = ring.samples()
    assert [s.pending for s in samples] == [3, 4, 5]  # bounded: the oldest fell off
    assert [s.at for s in samples] == [1008.0, 1012.0, 1016.0]
    body = ring.to_dict()
    assert body["capacity"] == 3 and len(body["samples"]) == 3
    assert body["samples"][-1] == {
        "at": 1016.0,
        "pending": 5,
        "dead": 1,
        "in_flight": 0,
        "delivered_per_second": 0.0,
    }
    points = chart_points(samples, "pending", width=100, height=10, top=5)
    assert points == "0.0,4.0 50.0,2.0 100.0,0.0"
    assert chart_points([], "dead", width=100, height=10, top=1) == ""


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.mark.postgres
def test_stats_report_in_flight_and_delivered_per_second(pg_url: str, pg_engine: sa.Engine) -> None:
    from safeship.cli.outbox import outbox_app

    _stage(pg_engine, 30)
    sink = GatedSink()
    config = RelayConfig(poll_interval=0.05, lease_ttl=0.3, listen=False)
    running = Relay(pg_url, sink, config=config).start_thread()
    try:
        wait_until(
            lambda: admin.stats(pg_engine).in_flight == 30,
            timeout=20,
            message="the relay reports its 30 claimed, unconfirmed events in flight",
        )
        held = admin.stats(pg_engine)
        assert held.pending == 30 and held.relays == 1 and held.delivered_per_second == 0.0
        result = CliRunner().invoke(
            outbox_app, ["stats", "--json"], env={"SAFESHIP_DATABASE_URL": pg_url}
        )
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)  # stderr says which database
        assert printed["in_flight"] == 30 and "delivered_per_second" in printed
        table = CliRunner().invoke(outbox_app, ["stats"], env={"SAFESHIP_DATABASE_URL": pg_url})
        assert "in_flight" in table.output and "delivered_per_second" in table.output

        sink.gate.set()
        wait_until(
            lambda: (
                (s := admin.stats(pg_engine)).pending == 0
                and s.in_flight == 0
                and s.published_total == 30
                and s.delivered_per_second > 0
            ),
            timeout=20,
            message="delivered: nothing in flight, a positive delivery rate",
        )
        # Heartbeats keep coming every 0.1 s; the rate covers ~10 s, so it stays up.
        threading.Event().wait(0.5)
        later = admin.stats(pg_engine)
        assert later.delivered_per_second > 0 and later.in_flight == 0
        assert later.delivered_per_second <= 30 / 0.5
    finally:
        running.stop()


@pytest.fixture
def pg_client(pg_url: str, pg_engine: sa.Engine) -> Iterator[TestClient]:
    from safeship.server import create_app
    from safeship.server.routes import outbox as routes

    app = create_app(make_settings(pg_url), engine=pg_engine)
    if not any(getattr(r, "path", "") == "/api/v1/outbox/stats" for r in app.routes):
        app.include_router(routes.api)
        app.include_router(routes.pages)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.mark.postgres
def test_history_endpoint_and_backlog_chart(pg_client: TestClient, pg_engine: sa.Engine) -> None:
    from safeship.server.routes import outbox as routes

    app = pg_client.app
    assert pg_client.get("/api/v1/outbox/history").status_code == 401
    first = pg_client.get("/api/v1/outbox/history", headers=read_headers())
    assert first.status_code == 200
    body = first.json()
    assert body["capacity"] == 360 and len(body["samples"]) == 1
    assert body["samples"][0]["pending"] == 0 and body["samples"][0]["in_flight"] == 0

    _stage(pg_engine, 7)
    # Within the sampling interval: no new sample, the database is not read again.
    again = pg_client.get("/api/v1/outbox/history", headers=read_headers()).json()
    assert len(again["samples"]) == 1
    ring = app.state.outbox_history  # type: ignore[attr-defined]
    assert isinstance(ring, BacklogHistory)
    ring.min_interval = 0.0
    later = pg_client.get("/api/v1/outbox/history", headers=read_headers()).json()
    assert [s["pending"] for s in later["samples"]] == [0, 7]

    stats = pg_client.get("/api/v1/outbox/stats", headers=read_headers()).json()
    assert stats["pending"] == 7 and stats["in_flight"] == 0
    assert stats["delivered_per_second"] == 0.0

    pg_client.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
    page = pg_client.get("/outbox")
    assert page.status_code == 200
    assert 'id="backlog-chart"' in page.text and 'data-stat="in_flight"' in page.text
    assert 'data-stat="delivered_per_second"' in page.text
    pending_line = re.search(r'id="backlog-pending"[^>]*points="([^"]*)"', page.text)
    dead_line = re.search(r'id="backlog-dead"[^>]*points="([^"]*)"', page.text)
    assert pending_line is not None and dead_line is not None
    ys = [float(p.split(",")[1]) for p in pending_line.group(1).split()]
    height = routes.CHART_HEIGHT
    assert len(ys) >= 3 and ys[0] == height and ys[-1] == 0.0  # 0 at the bottom, 7 on top
    assert all(float(p.split(",")[1]) == height for p in dead_line.group(1).split())
    assert "/api/v1/outbox/history" in page.text and "<script src=" not in page.text
    # The page's own script polls with the session cookie: a GET needs no CSRF token.
    polled = pg_client.get("/api/v1/outbox/history")
    assert polled.status_code == 200 and polled.json()["samples"][-1]["pending"] == 7
