"""The control plane's ``/metrics`` carries every slice's stored figures, read at scrape time.

A real control plane (SQLite and PostgreSQL) gets data in every slice — flags and their
evaluations, a rolled-back and a running rollout with arm windows, a relay delivering
events (one of them dead-lettered), a breaker reported to the board with a manual mode —
and its scrape is compared with what the shipped Grafana dashboards query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from safeship.flags.live import FlagClient
from safeship.observe.scrape import DatabaseCollector, ScrapeSource
from safeship.outbox import CallbackSink, Event, Relay, RelayConfig, stage
from safeship.outbox.admin import stats
from safeship.resilience import Breaker, Constant, default_registry
from safeship.resilience.board import BreakerBoard, BreakerReporter
from safeship.rollouts._monitor import ArmWindow
from safeship.rollouts._plan import Plan
from safeship.server import create_app
from safeship.server.app import stored_metrics
from tests.observe.test_grafana import all_queries
from tests.server.support import make_settings, read_headers

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
_METRIC = re.compile(r"\bsafeship_[a-z0-9_]+\b")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_FAST = RelayConfig(
    poll_interval=0.05, lease_ttl=1.0, max_attempts=2, backoff=Constant(delay_seconds=0.05)
)


def _samples(text: str) -> dict[str, set[str]]:
    """Sample name → label names, for every sample of a scrape."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _wait_until(condition: object, message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {message}")
        time.sleep(0.02)


def _fill_flags(client: TestClient) -> FlagClient:
    store = client.app.state.plane.flags  # type: ignore[attr-defined]
    store.create("scrape-checkout", actor="cli:test")
    store.set_enabled("scrape-checkout", True, actor="cli:test")
    store.create(
        "scrape-colour",
        actor="cli:test",
        definition={
            "name": "scrape-colour",
            "enabled": True,
            "strategies": [{"name": "default"}],
            "variants": [{"name": "blue", "weight": 1000, "stickiness": "default"}],
        },
    )
    store.create("scrape-search", actor="cli:test")
    live = FlagClient(store=store, poll_interval=60, push=False, start=False)
    live.start()  # loads the stored state and joins the process's metrics
    assert live.is_enabled("scrape-checkout") is True
    live.is_enabled("scrape-search")
    live.variant("scrape-colour", {"userId": "u1"})
    return live


def _fill_rollouts(client: TestClient) -> None:
    guard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    for name in ("scrape-orders", "scrape-billing"):
        guard.create(name, actor="cli:test", plan=Plan(steps=(10.0, 50.0, 100.0), min_hold=0))
    bad = ArmWindow(requests=60, errors=40, histogram={44: 60})
    good = ArmWindow(requests=500, errors=2, histogram={40: 450, 48: 50})
    guard.record_window("scrape-orders", process="p1", control=good, candidate=bad)
    decision = guard.evaluate("scrape-orders")
    assert decision is not None and decision.kind == "rolled_back"
    healthy = ArmWindow(requests=100, errors=1, histogram={40: 100})
    guard.record_window("scrape-billing", process="p1", control=good, candidate=healthy)


def _fill_outbox(engine: sa.Engine) -> Iterator[None]:
    def handler(event: Event) -> None:
        if event.aggregate_id == "poison":
            raise ValueError("the consumer refuses this event")

    with engine.begin() as conn:
        for key in ("o-1", "o-2", "poison"):
            stage(conn, aggregate_type="order", aggregate_id=key, type="created", payload={})
    running = Relay(engine, CallbackSink(handler), config=_FAST).start_thread()
    try:
        _wait_until(lambda: stats(engine).dead == 1 and stats(engine).pending == 0, "drained")
        # A heartbeat stores the partitions held before it: wait for the one after the lease.
        _wait_until(lambda: stats(engine).leased_partitions > 0, "relay heartbeat with leases")
        yield
    finally:
        running.stop()


def _fill_breakers(engine: sa.Engine) -> Breaker:
    breaker = Breaker("scrape-payments", registry=default_registry)  # registered weakly: keep it
    reporter = BreakerReporter(engine, service="orders", instance="pod-1", start=False)
    reporter.report_once()
    BreakerBoard(engine).set_mode("orders", "scrape-payments", "forced_open", actor="cli:test")
    reporter.report_once()  # applies the mode: a transition closed → open
    reporter.report_once()  # reports the breaker open
    assert reporter.last_error is None
    return breaker


@pytest.fixture
def scrape(client: TestClient, engine: sa.Engine) -> Iterator[str]:
    """One scrape of a control plane with data in every slice."""
    live = _fill_flags(client)
    _fill_rollouts(client)
    breaker = _fill_breakers(engine)
    client.get("/api/v1/flags", headers={"X-API-Key": "ss_read_wrong"})  # an auth failure
    client.get("/api/v1/flags", headers=read_headers())
    try:
        for _ in _fill_outbox(engine):
            response = client.get("/metrics")
            assert response.status_code == 200
            yield response.text
    finally:
        live.close()
        del breaker


def test_the_scrape_has_every_slice_stored_figures(scrape: str) -> None:
    # on: scrape-checkout, scrape-colour and scrape-billing (at its first step);
    # off: scrape-search and scrape-orders (rolled back)
    assert _value(scrape, "safeship_flags", state="enabled") == 3
    assert _value(scrape, "safeship_flags", state="disabled") == 2
    assert _value(scrape, "safeship_flags_killed") == 0
    assert (_value(scrape, "safeship_flags_store_version") or 0) > 0
    assert _value(scrape, "safeship_rollout_status", rollout="scrape-orders", status="rolled_back")
    assert _value(scrape, "safeship_rollout_candidate_ratio", rollout="scrape-billing") == 0.1
    assert _value(scrape, "safeship_rollout_step", rollout="scrape-billing") == 0
    arm = {"rollout": "scrape-billing", "arm": "candidate"}
    assert _value(scrape, "safeship_rollout_arm_requests_total", **arm) == 100
    assert _value(scrape, "safeship_rollout_arm_errors_total", **arm) == 1
    assert _value(scrape, "safeship_rollout_arm_latency_seconds", **arm, quantile="0.99")
    assert _value(scrape, "safeship_rollout_stored_decisions_total", kind="rolled_back") == 1
    assert _value(scrape, "safeship_outbox_dead_letters") == 1
    assert _value(scrape, "safeship_outbox_backlog") == 0
    assert _value(scrape, "safeship_outbox_relays_alive") == 1
    assert (_value(scrape, "safeship_outbox_leased_partitions") or 0) > 0
    breaker = {"service": "orders", "breaker": "scrape-payments"}
    assert _value(scrape, "safeship_breakers", **breaker, state="forced_open") == 1
    assert _value(scrape, "safeship_breaker_mode", **breaker, mode="forced_open") == 1
    assert _value(scrape, "safeship_db_pool_connections", state="in_use") is not None
    for source in ("outbox", "flags", "rollouts", "breakers"):
        assert _value(scrape, "safeship_scrape_errors_total", source=source, reason="error") == 0


def test_every_dashboard_query_names_series_the_control_plane_exposes(scrape: str) -> None:
    exposed = _samples(scrape)
    missing = []
    for topic, title, expr in all_queries():
        names = _METRIC.findall(expr)
        assert names, f"{topic}/{title}: query uses no safeship metric: {expr}"
        for name in names:
            if name not in exposed:
                missing.append(f"{topic}/{title}: {name}")
        labels = set().union(*(exposed.get(n, set()) for n in names)) | {"le", "job", "instance"}
        for group in _BY.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                assert label in labels, f"{topic}/{title}: label {label!r} of {expr!r}"
    assert not missing, "queried but not exposed:\n" + "\n".join(missing)


def test_every_exposed_family_is_documented(scrape: str) -> None:
    documented = DOCS.read_text()
    for family in text_string_to_metric_families(scrape):
        if family.name.startswith("safeship_") and not family.name.endswith("_created"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{shown}`" in documented, f"{shown} is missing from docs/metrics.md"


def test_a_database_held_by_a_lock_costs_one_error_not_the_scrape(
    client: TestClient, engine: sa.Engine, database_url: str
) -> None:
    """A read blocked behind a lock ends at the statement timeout (PostgreSQL) or the
    database's busy timeout (SQLite): the scrape answers with the other slices."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite readers are not blocked by a writer in WAL mode")
    collector = stored_metrics(engine, timeout=1.0)
    with engine.connect() as holder, holder.begin():
        holder.execute(sa.text("LOCK TABLE safeship_outbox IN ACCESS EXCLUSIVE MODE"))
        families = {f.name: f for f in collector.collect()}
    errors = {
        (s.labels["source"], s.labels["reason"]): s.value
        for s in families["safeship_scrape_errors"].samples
    }
    assert errors["outbox", "error"] == 1
    assert errors["flags", "error"] == errors["flags", "timeout"] == 0
    assert "safeship_flags" in families and "safeship_outbox_backlog" not in families


def test_a_scrape_gives_up_at_its_timeout_and_does_not_pile_up(database_url: str) -> None:
    """With every pooled connection taken, the read waits on the pool: the scrape returns
    at its timeout, counts it, and the next scrape does not start a second reading."""
    engine = sa.create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=30)
    try:
        collector = DatabaseCollector(engine, [ScrapeSource("probe", lambda conn: [])], timeout=0.5)
        held = engine.connect()
        first = {f.name: f for f in collector.collect()}
        second = {f.name: f for f in collector.collect()}
        held.close()  # the hung reading gets its connection and ends
        _wait_until(lambda: not collector._running.is_alive(), "reading ended")  # type: ignore[union-attr]
        third = {f.name: f for f in collector.collect()}
    finally:
        engine.dispose()

    def errors(families: dict[str, Metric], reason: str) -> float:
        family = families["safeship_scrape_errors"]
        return float(next(s.value for s in family.samples if s.labels["reason"] == reason))

    assert errors(first, "timeout") == 1 and errors(first, "busy") == 0
    assert errors(second, "busy") == 1
    assert errors(third, "timeout") == 1 and errors(third, "busy") == 1
    assert any(
        s.labels["source"] == "probe" for s in third["safeship_scrape_duration_seconds"].samples
    )
    assert first["safeship_db_pool_connections"] is not None


def test_a_control_plane_that_cannot_reach_its_database_still_answers_metrics(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    app = create_app(make_settings(url))
    with TestClient(app) as client:
        (tmp_path / "plane.db").unlink()
        (tmp_path / "plane.db").mkdir()  # the file is now a directory: every query fails
        app.state.plane.engine.dispose()
        response = client.get("/metrics")
    assert response.status_code == 200
    assert _value(response.text, "safeship_scrape_errors_total", source="outbox", reason="error")


def test_arm_counters_add_only_the_windows_shipped_since_the_last_scrape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scrape sums at most ``CATCH_UP_WINDOWS`` new windows, so its cost follows the
    scrape interval, not the rollout's age; the counters only grow and reach the total."""
    from safeship.rollouts import _metrics as rollout_metrics

    guard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    guard.create("scrape-catch-up", actor="cli:test", plan=Plan(steps=(10.0, 100.0)))
    window = ArmWindow(requests=100, errors=1, histogram={40: 100})
    for _ in range(3):
        guard.record_window("scrape-catch-up", process="p1", control=window, candidate=window)
    monkeypatch.setattr(rollout_metrics, "CATCH_UP_WINDOWS", 2)
    figures = rollout_metrics.RolloutFigures()
    seen = []
    engine = client.app.state.plane.engine  # type: ignore[attr-defined]
    for _ in range(3):
        with engine.connect() as conn:
            families = {f.name: f for f in figures.read(conn)}
        requests = families["safeship_rollout_arm_requests"].samples
        seen.append(next(s.value for s in requests if s.labels["arm"] == "candidate"))
    assert seen == [200, 300, 300]
