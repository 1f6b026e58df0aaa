"""HTTP metrics labels, exposition and the multiprocess switch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from safeship.observe import metrics


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
