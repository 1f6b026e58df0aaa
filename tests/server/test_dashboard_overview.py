"""The overview as JSON and as a page, the stored chart history, timestamps, the breakers
page's mode and the rollout page's words and buttons (SQLite and PostgreSQL)."""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.outbox import stage
from safeship.resilience import Breaker, default_registry
from safeship.resilience.board import BreakerReporter
from safeship.rollouts import Plan
from safeship.server import create_app
from safeship.server._samples import Point, Sampler, plane_points, samples
from safeship.server.state import ControlPlane
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, make_settings, read_headers

EPOCH_TEXT = re.compile(r">\s*1[6-9]\d{8}(\.\d+)?\s*<")


@pytest.fixture
def quiet(database_url: str, engine: sa.Engine) -> Iterator[TestClient]:
    """A control plane that does not sample on its own (the tests sample by hand)."""
    app = create_app(make_settings(database_url), engine=engine, sample_interval=None)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def cp_of(client: TestClient) -> ControlPlane:
    plane: ControlPlane = client.app.state.plane  # type: ignore[attr-defined]
    return plane


def sign_in(client: TestClient, key: str = ADMIN_KEY) -> None:
    assert client.post("/login", data={"key": key}, follow_redirects=False).status_code == 303


def open_breaker(engine: sa.Engine) -> str:
    name = f"ov-{uuid.uuid4().hex[:8]}"
    breaker = Breaker(name, registry=default_registry)
    breaker.force_open(reason="drill")
    BreakerReporter(engine, service="orders", instance="pod-1").report_once()
    return name


def test_a_quiet_plane_passes(quiet: TestClient) -> None:
    body = quiet.get("/api/v1/overview", headers=read_headers()).json()
    assert body["verdict"] == "pass", body["sections"]
    assert set(body["sections"]) == {
        "flags",
        "rollouts",
        "breakers",
        "outbox",
        "alerts",
        "database",
        "idempotency",  # the migrated plane holds the SQL key store's table
    }
    assert body["idempotency"] == {
        "in_flight": 0,
        "unknown": 0,
        "completed_last_hour": 0,
        "readable": True,
    }
    assert body["database"]["reachable"] is True and body["database"]["in_use"] is not None
    assert body["generated_at"].endswith("+00:00")
    assert quiet.get("/api/v1/overview").status_code == 401


def test_an_open_breaker_and_a_backlog_without_relay_are_visible_warnings(
    quiet: TestClient, engine: sa.Engine
) -> None:
    name = open_breaker(engine)
    with engine.begin() as conn:
        stage(conn, aggregate_type="order", aggregate_id="7", type="created", payload={})
    body = quiet.get("/api/v1/overview", headers=read_headers()).json()
    assert body["verdict"] == "warn"
    assert body["sections"]["outbox"] == {
        "status": "warn",
        "findings": ["1 event(s) pending and no relay alive"],
    }
    breakers = body["sections"]["breakers"]
    assert breakers["status"] == "warn"
    assert any(f"orders/{name} on pod-1 is forced open" == f for f in breakers["findings"])
    mine = next(b for b in body["breakers"] if b["name"] == name)
    assert mine["since"] is not None and mine["since"].endswith("+00:00")

    sign_in(quiet, READ_KEY)
    page = quiet.get("/").text
    assert 'data-verdict="warn"' in page
    assert 'data-section="outbox" data-status="warn"' in page
    assert "no relay for a backlog" in page and f"{name}" in page
    assert "Component health" in page  # the readiness checks stay on the overview


def test_idempotency_keys_reach_the_overview_and_unknown_outcomes_warn(
    quiet: TestClient, engine: sa.Engine
) -> None:
    import asyncio

    from safeship.idempotency import SqlStore, StoredResponse

    store = SqlStore(engine)

    async def keys() -> None:
        running = await store.claim("a" * 64, "fp", lease=30, ttl=60)
        failed = await store.claim("b" * 64, "fp", lease=30, ttl=60)
        done = await store.claim("c" * 64, "fp", lease=30, ttl=60)
        assert running.token and failed.token and done.token
        assert await store.mark_unknown("b" * 64, failed.token)
        assert await store.complete("c" * 64, done.token, StoredResponse(201), ttl=60)

    asyncio.run(keys())
    body = quiet.get("/api/v1/overview", headers=read_headers()).json()
    assert body["idempotency"]["in_flight"] == 1
    assert body["idempotency"]["unknown"] == 1
    assert body["idempotency"]["completed_last_hour"] == 1
    section = body["sections"]["idempotency"]
    assert section["status"] == "warn" and body["verdict"] == "warn"
    assert "1 key(s) with an unknown outcome" in section["findings"][0]

    sign_in(quiet, READ_KEY)
    page = quiet.get("/").text
    assert 'id="overview-idempotency"' in page
    assert 'data-section="idempotency" data-status="warn"' in page
    assert "may have acted: check before a retry" in page


def test_without_the_idempotency_table_there_is_no_card(
    quiet: TestClient, engine: sa.Engine
) -> None:
    from safeship.idempotency._schema import idempotency

    idempotency.drop(engine)
    body = quiet.get("/api/v1/overview", headers=read_headers()).json()
    assert "idempotency" not in body["sections"] and body["idempotency"] is None
    assert body["verdict"] == "pass", body["sections"]
    sign_in(quiet, READ_KEY)
    assert 'id="overview-idempotency"' not in quiet.get("/").text


def test_flags_rollouts_and_alerts_reach_the_overview(quiet: TestClient) -> None:
    cp = cp_of(quiet)
    cp.rollouts.create("checkout-v2", actor="cli:alice", plan=Plan(steps=(10, 50, 100)))
    quiet.post("/api/v1/rollouts/checkout-v2/rollback", headers=admin_headers())
    body = quiet.get("/api/v1/overview", headers=read_headers()).json()
    assert [f["name"] for f in body["flags"]] == ["checkout-v2"]
    assert body["flags"][0]["updated_at"].endswith("+00:00")
    assert body["rollouts"][0]["status"] == "rolled_back"
    assert body["rollouts"][0]["control"]["requests"] == 0
    assert body["sections"]["rollouts"]["status"] == "warn"
    assert body["sections"]["alerts"]["status"] == "warn"
    assert body["alerts"][0]["kind"] == "rolled_back"


def test_several_samplers_write_one_row_per_bucket(engine: sa.Engine, quiet: TestClient) -> None:
    points = [Point("outbox", "", "pending", 4.0), Point("breaker", "o/b", "state", 2.0)]
    at = 1_800_000_015.0  # inside the bucket starting at 1_800_000_000 (30 s buckets)
    samplers = [
        Sampler(engine, lambda: points, clock=lambda: at) for _ in range(3)
    ]  # three control-plane processes, one moment
    written: list[int] = []
    barrier = threading.Barrier(3)

    def run(s: Sampler) -> None:
        barrier.wait()
        written.append(s.sample_once())

    threads = [threading.Thread(target=run, args=(s,)) for s in samplers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(samples.c.metric, samples.c.bucket)).all()
    assert sorted(rows) == [("pending", 1_800_000_000), ("state", 1_800_000_000)]
    assert sorted(written) == [0, 0, 2]


def test_retention_bounds_the_table(engine: sa.Engine, quiet: TestClient) -> None:
    now = [1_800_000_000.0]
    sampler = Sampler(
        engine,
        lambda: [Point("outbox", "", "pending", 1.0)],
        interval=10.0,
        retention=timedelta(minutes=1),
        clock=lambda: now[0],
    )
    for _ in range(20):  # 200 s of samples, 60 s kept
        sampler.sample_once()
        now[0] += 10.0
    with engine.connect() as conn:
        buckets = conn.execute(sa.select(samples.c.bucket).order_by(samples.c.bucket)).scalars()
        kept = list(buckets)
    assert len(kept) == 7 and kept[-1] - kept[0] == 60


def test_sampler_settings_are_bounded(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="interval"):
        Sampler(engine, list, interval=0.1)
    with pytest.raises(ValueError, match="retention"):
        Sampler(engine, list, interval=30.0, retention=timedelta(days=90))


def test_charts_have_history_on_first_view(quiet: TestClient, engine: sa.Engine) -> None:
    cp = cp_of(quiet)
    cp.rollouts.create("orders-batched", actor="cli:alice", plan=Plan(steps=(10, 100)))
    open_breaker(engine)
    start = time.time() - 30 * 60
    for i in range(5):  # five buckets over the last half hour, before anyone looks
        sampler = Sampler(
            cp.engine,
            lambda: plane_points(cp.engine, cp.breakers, cp.rollouts),
            clock=functools.partial(float, start + i * 300),
        )
        assert sampler.sample_once() > 0
    stored = quiet.get("/api/v1/samples?kind=outbox", headers=read_headers()).json()
    pending = next(s for s in stored["series"] if s["metric"] == "pending")
    assert len(pending["points"]) == 5 and pending["points"][0]["at"].endswith("+00:00")

    sign_in(quiet)
    page = quiet.get("/").text
    backlog = re.search(r'id="chart-backlog".*?</svg>', page, re.S)
    assert backlog is not None
    assert 'data-series="pending" data-count="5"' in backlog.group(0)
    assert backlog.group(0).count("data-time=") == 5  # time ticks, localised by the page
    assert 'id="chart-breakers"' in page and 'id="chart-rollout-1"' in page
    outbox = quiet.get("/outbox").text
    assert 'id="chart-backlog-history"' in outbox and 'data-count="5"' in outbox


def test_the_app_samples_in_its_lifespan(database_url: str, engine: sa.Engine) -> None:
    app = create_app(make_settings(database_url), engine=engine, sample_interval=1.0)
    with TestClient(app):
        deadline = time.monotonic() + 10
        count = 0
        while count == 0 and time.monotonic() < deadline:
            with engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(samples)).scalar_one()
            time.sleep(0.05)
    assert count >= 5  # the outbox figures of the first bucket


def test_pages_show_times_as_time_elements_never_epochs(
    quiet: TestClient, engine: sa.Engine
) -> None:
    open_breaker(engine)
    cp_of(quiet).rollouts.create("checkout", actor="cli:alice", plan=Plan(steps=(10, 100)))
    sign_in(quiet)
    for path in ("/", "/breakers", "/flags", "/flags/checkout", "/rollouts", "/rollouts/checkout"):
        page = quiet.get(path).text
        assert "<time datetime=" in page, path
        assert EPOCH_TEXT.search(page) is None, path
        assert 'rel="icon"' in page and "time[datetime]" in page, path
    assert quiet.get("/favicon.ico").headers["content-type"].startswith("image/svg")


def test_the_breakers_page_shows_the_current_mode(quiet: TestClient, engine: sa.Engine) -> None:
    name = open_breaker(engine)
    quiet.post(
        f"/api/v1/breakers/orders/{name}/mode",
        json={"mode": "metrics_only"},
        headers=admin_headers(),
    )
    sign_in(quiet)
    page = quiet.get("/breakers").text
    row = re.search(rf'<tr data-breaker="{name}" data-mode="metrics_only">.*?</tr>', page, re.S)
    assert row is not None
    assert "<strong data-current-mode>metrics only</strong>" in row.group(0)
    assert re.search(r'disabled aria-pressed="true">Metrics only<', row.group(0))


def test_a_rolled_back_rollout_offers_no_forward_buttons_and_explains_itself(
    quiet: TestClient,
) -> None:
    cp_of(quiet).rollouts.create("checkout", actor="cli:alice", plan=Plan(steps=(10, 100)))
    sign_in(quiet)
    live = quiet.get("/rollouts/checkout").text
    assert re.search(r'data-action="pause"[^>]*>', live) and "What this means" in live
    assert re.search(r'data-action="promote"[^>]*hidden>', live)  # canary: nothing to promote
    quiet.post("/api/v1/rollouts/checkout/rollback", headers=admin_headers())
    page = quiet.get("/rollouts/checkout").text
    for action in ("pause", "resume", "advance", "promote", "rollback", "abort"):
        assert re.search(rf'data-action="{action}"[^>]*hidden>', page), action
    assert "Finished: nothing left to do" in page
    assert "the guard no longer acts on it" in page and "(an e-value of 100)" in page
    words = quiet.get("/rollouts/checkout/explanation").json()["sentences"]
    assert words[0] == "The rollout is rolled back: the guard no longer acts on it."
    assert words[1].startswith("No verdict yet")


def test_a_failing_sample_is_logged_and_the_next_one_still_runs(
    engine: sa.Engine, quiet: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    calls: list[int] = []
    third = threading.Event()

    def read() -> list[Point]:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return [Point("outbox", "", "pending", float(len(calls)))]

    moments = iter(range(1_800_000_000, 1_800_010_000, 30))
    sampler = Sampler(engine, read, clock=lambda: float(next(moments)) + 29.99)

    async def until_two_written() -> None:
        task = asyncio.create_task(sampler.run())
        assert await asyncio.to_thread(third.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level("WARNING", logger="safeship.server"):
        asyncio.run(asyncio.wait_for(until_two_written(), 10))
    assert [r.getMessage() for r in caplog.records] == ["server.sample_failed"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(samples)).scalar_one() >= 1


def test_with_the_database_down_the_overview_fails_fast_and_says_why(tmp_path: Path) -> None:
    from safeship.db import create_engine
    from safeship.server._overview import overview
    from safeship.server.app import build_plane

    dead = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")  # no such folder
    cp = build_plane(make_settings(str(dead.url)), dead)
    started = time.monotonic()
    body = overview(cp)
    assert time.monotonic() - started < 5
    assert body["verdict"] == "fail" and body["database"]["reachable"] is False
    assert body["sections"]["database"]["findings"][0].startswith("the database does not answer")
    assert body["sections"]["outbox"] == {
        "status": "fail",
        "findings": ["the outbox could not be read: the database does not answer"],
    }
    dead.dispose()


def test_other_kinds_rows_never_crowd_the_overview_charts_out(
    quiet: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overview reads only the kinds it draws: many rows of a kind sorting first (the
    cache reporters') do not use up the read's row cap before the outbox's rows."""
    from safeship.server import _samples

    cp = cp_of(quiet)
    now = time.time()
    Sampler(cp.engine, lambda: plane_points(cp.engine, cp.breakers, cp.rollouts),
            clock=functools.partial(float, now - 60)).sample_once()  # fmt: skip
    many = [Point("cache", f"svc/i-1/ns{i}", "hits", 1.0) for i in range(30)]
    Sampler(cp.engine, lambda: many, clock=functools.partial(float, now - 60)).sample_once()
    monkeypatch.setattr(_samples, "MAX_ROWS", 20)
    sign_in(quiet)
    backlog = re.search(r'id="chart-backlog".*?</svg>', quiet.get("/").text, re.S)
    assert backlog is not None and 'data-series="pending" data-count="1"' in backlog.group(0)
    cached = quiet.get("/api/v1/samples?kind=cache", headers=read_headers()).json()
    assert {s["kind"] for s in cached["series"]} == {"cache"} and len(cached["series"]) == 20
