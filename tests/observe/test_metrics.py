"""HTTP metrics labels, exposition and the multiprocess switch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from safeship.observe import _http_metrics as http_metrics
from safeship.observe import _metrics as metrics
from safeship.observe._http_metrics import ProcessHttpMetrics, SharedHttpMetrics


def test_render_latest_returns_text_format_with_safeship_metrics() -> None:
    metrics.observe_request("GET", "/render-test", 200, 0.01)
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    assert b'safeship_http_requests_total{method="GET",route="/render-test",status="200"}' in body
    assert b"safeship_http_request_duration_seconds_bucket" in body
    assert b"safeship_http_requests_in_progress" in body


def test_multiprocess_is_off_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    assert not metrics.multiprocess_enabled()


def test_route_label_prefers_template_over_raw_path() -> None:
    scope = {"path": "/orders/42", "route": SimpleNamespace(path="/orders/{order_id}")}
    assert metrics.route_label(scope, 200) == "/orders/{order_id}"


def test_route_label_adds_mount_prefix() -> None:
    scope = {
        "path": "/api/orders/42",
        "root_path": "/api",
        "app_root_path": "",
        "route": SimpleNamespace(path="/orders/{order_id}"),
    }
    assert metrics.route_label(scope, 200) == "/api/orders/{order_id}"


def test_route_label_falls_back_to_bounded_values() -> None:
    assert metrics.route_label({"path": "/random/123"}, 404) == metrics.UNMATCHED_ROUTE
    assert metrics.route_label({"path": "/random/123"}, 200) == metrics.UNKNOWN_ROUTE
    assert metrics.route_label({"safeship.route": "/readyz"}, 503) == "/readyz"


def test_unknown_methods_collapse() -> None:
    assert metrics.method_label("GET") == "GET"
    assert metrics.method_label("BREW") == "OTHER"


def test_observe_request_counts() -> None:
    def value() -> float:
        labels = {"method": "POST", "route": "/count-test", "status": "201"}
        return REGISTRY.get_sample_value("safeship_http_requests_total", labels) or 0.0

    before = value()
    metrics.observe_request("POST", "/count-test", 201, 0.2)
    assert value() == before + 1


# -- the HTTP metrics of one process -----------------------------------------------------

OBSERVED = [
    ("GET", "/a", 200, 0.001),
    ("GET", "/a", 200, 0.005),  # on a bound: counted in that bucket (le is inclusive)
    ("GET", "/a", 500, 0.3),
    ("POST", "/b/{id}", 201, 12.0),  # past the last bound: +Inf only
    ("BREW", "/a", 418, 0.02),  # an unknown verb: OTHER
]


def _exposition(recorder: object) -> list[str]:
    registry = CollectorRegistry()
    registry.register(recorder)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_process_metrics_expose_what_prometheus_client_metrics_expose() -> None:
    fast = ProcessHttpMetrics(metrics.HTTP_BUCKETS)
    reference = SharedHttpMetrics(metrics.HTTP_BUCKETS)
    for recorder in (fast, reference):
        recorder.started()
        recorder.started()
        for observation in OBSERVED:
            recorder.finished(*observation)
        recorder.started()
    assert _exposition(fast) == _exposition(reference)
    assert fast.snapshot()[("OTHER", "/a", 418)] == 1


def test_process_metrics_count_exactly_across_threads() -> None:
    recorder = ProcessHttpMetrics(metrics.HTTP_BUCKETS)

    def work() -> None:
        for _ in range(5000):
            recorder.started()
            recorder.finished("GET", "/t", 200, 0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.snapshot() == {("GET", "/t", 200): 20_000}
    assert "safeship_http_requests_in_progress 0.0" in _exposition(recorder)


def test_process_metrics_bound_their_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_metrics, "MAX_SERIES", 3)
    recorder = ProcessHttpMetrics(metrics.HTTP_BUCKETS)
    for number in range(10):
        recorder.observe("GET", f"/r{number}", 200, 0.01)
    counts = recorder.snapshot()
    assert len(counts) == 4 and counts[("GET", http_metrics.OVERFLOW_ROUTE, 200)] == 7


@pytest.mark.parametrize("buckets", [(), (0.1, 0.05), (0.1, 0.1), (0.1, float("inf"))])
def test_process_metrics_refuse_bad_buckets(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        ProcessHttpMetrics(buckets)


def test_a_family_read_at_scrape_time_replaces_the_process_one_of_the_same_name() -> None:
    """An app process with ``outbox_check`` and the control plane's stored figures both
    name ``safeship_outbox_backlog``: one exposition carries it once, the stored value."""
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    from safeship.outbox import _metrics as outbox_metrics

    outbox_metrics.backlog(5, 1.0, 0)

    class Stored(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily("safeship_outbox_backlog", "Pending events.")
            family.add_metric([], 7)
            yield family

    body, _ = metrics.render_latest(also=[Stored()])
    text = body.decode()
    assert text.count("# TYPE safeship_outbox_backlog gauge") == 1
    assert "safeship_outbox_backlog 7.0" in text and "safeship_outbox_backlog 5.0" not in text


def test_a_process_without_a_web_app_serves_metrics_and_health(tmp_path: Path) -> None:
    """A relay's `MetricsServer`: its own metrics plus the outbox as stored, and a health
    answer that follows what the process says about itself."""
    from safeship.db import create_engine, upgrade
    from safeship.observe.scrape import DatabaseCollector, ScrapeSource
    from safeship.outbox import _metrics as outbox_metrics

    engine = create_engine(f"sqlite:///{tmp_path / 'relay.db'}")
    upgrade(engine)
    healthy = [True]
    stored = DatabaseCollector(engine, [ScrapeSource("outbox", outbox_metrics.read_stored)])
    server = metrics.MetricsServer(port=0, health=lambda: (healthy[0], "relaying"), also=[stored])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
            text = http.get("/metrics").text
            assert "safeship_outbox_backlog 0.0" in text
            assert 'safeship_scrape_errors_total{reason="error",source="outbox"} 0.0' in text
            answer = http.get("/health")
            assert answer.status_code == 200 and answer.json()["status"] == "pass"
            healthy[0] = False
            answer = http.get("/health")
            assert answer.status_code == 503
            assert answer.json() == {"status": "fail", "output": "relaying"}
            assert http.get("/other").status_code == 404
    finally:
        server.close()
        engine.dispose()


def test_a_metrics_server_refuses_a_port_out_of_range() -> None:
    with pytest.raises(metrics.MetricsConfigError, match="port: a TCP port 0-65535"):
        metrics.MetricsServer(port=70000)


def test_an_apps_pool_is_exposed_in_use_and_idle(tmp_path: Path) -> None:
    from safeship.db import create_engine
    from safeship.observe.scrape import PoolCollector

    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    registry = CollectorRegistry()
    registry.register(PoolCollector(engine))
    try:
        with engine.connect():
            busy = generate_latest(registry).decode()
        idle = generate_latest(registry).decode()
    finally:
        engine.dispose()
    assert 'safeship_db_pool_connections{pool="default",state="in_use"} 1.0' in busy
    assert 'safeship_db_pool_connections{pool="default",state="idle"} 0.0' in busy
    assert 'safeship_db_pool_connections{pool="default",state="in_use"} 0.0' in idle
    assert 'safeship_db_pool_connections{pool="default",state="idle"} 1.0' in idle
    assert "safeship_db_pool_max_connections" in idle
