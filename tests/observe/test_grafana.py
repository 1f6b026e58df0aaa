"""The shipped Grafana dashboard parses and only queries metrics that exist."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import safeship
from safeship.observe import metrics

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
_METRIC = re.compile(r"\bsafeship_[a-z0-9_]+\b")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _import_all_safeship_modules() -> None:
    """Import every module so metrics defined anywhere in safeship are registered."""
    for module in pkgutil.walk_packages(safeship.__path__, "safeship."):
        if module.name.startswith(("safeship.demo", "safeship.cli")):
            continue
        with contextlib.suppress(ImportError):  # an optional extra that is not installed
            importlib.import_module(module.name)


def _exposed() -> dict[str, set[str]]:
    """Exposed sample name → label names, for every metric in the default registry.

    Labelled metrics without children yet expose no samples, so the registry's name
    index (which lists ``_total``, ``_bucket``, ``_sum``... names) is used instead.
    """
    _import_all_safeship_modules()
    metrics.observe_request("GET", "/grafana-test", 200, 0.01)  # the HTTP collector's samples
    exposed: dict[str, set[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():
        labels = set(getattr(collector, "_labelnames", ()))
        if not hasattr(collector, "_labelnames"):  # a custom collector: labels of its samples
            for family in collector.collect():
                for sample in family.samples:
                    if sample.name == name:
                        labels |= set(sample.labels)
        exposed[name] = labels
    return exposed


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return metrics.grafana_dashboard()


def test_dashboard_has_identity_and_unique_panels(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "safeship-overview"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_every_query_uses_existing_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    exposed = _exposed()
    queries = list(_queries(dashboard))
    assert queries
    for expr in queries:
        names = _METRIC.findall(expr)
        assert names, f"query uses no safeship metric: {expr}"
        for name in names:
            assert name in exposed, f"{name} in {expr!r} is not a registered metric"
        labels = set().union(*(exposed[n] for n in names)) | {"le", "job", "instance"}
        for group in _BY.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                assert label in labels, f"label {label!r} of {expr!r} does not exist"


def test_dashboard_covers_the_http_metrics(dashboard: dict[str, Any]) -> None:
    text = "\n".join(_queries(dashboard))
    for name in (
        "safeship_http_requests_total",
        "safeship_http_request_duration_seconds_bucket",
        "safeship_http_requests_in_progress",
        "safeship_log_alerts_total",
    ):
        assert name in text


def test_every_observe_metric_is_documented() -> None:
    documented = DOCS.read_text()
    for name in (
        "safeship_http_requests_total",
        "safeship_http_request_duration_seconds",
        "safeship_http_requests_in_progress",
        metrics.LOG_ALERTS._name + "_total",
        metrics.AUTH_FAILURES._name + "_total",
    ):
        assert name in documented, f"{name} is missing from docs/metrics.md"
