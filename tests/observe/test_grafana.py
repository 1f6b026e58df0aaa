"""The shipped Grafana dashboards parse and only query metrics that exist.

Every query is checked by Prometheus' own parser (``promtool check rules``); that the
names exist in a real control plane's scrape is held by tests/server/test_metrics_scrape.py.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import safeship
from safeship.observe import _metrics as metrics

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


#: What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*", "$rollout": ".*"}


def as_sent(expr: str) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def all_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard topic, panel title, query) of every panel of every shipped dashboard."""
    for topic, board in metrics.grafana_dashboards().items():
        for panel in _panels(board):
            for target in panel.get("targets", []):
                yield topic, panel["title"], target["expr"]


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


def test_a_dashboard_ships_for_every_slice() -> None:
    boards = metrics.grafana_dashboards()
    assert set(boards) == {"http", "flags", "rollouts", "outbox", "breakers", "database"}
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for topic, board in boards.items():
        ids = [p["id"] for p in _panels(board)]
        assert len(ids) == len(set(ids)), topic
        assert any(p.get("targets") for p in _panels(board)), topic
        for panel in _panels(board):
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (topic, panel["title"])


def test_an_unknown_dashboard_is_refused_with_the_known_ones() -> None:
    with pytest.raises(metrics.MetricsConfigError, match="known: http, flags"):
        metrics.grafana_dashboard("kafka")


def test_every_query_of_every_dashboard_parses_in_prometheus(tmp_path: Path) -> None:
    """Each query becomes a recording rule that ``promtool`` (Prometheus' parser) checks."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("SAFESHIP_REQUIRE_SERVICES") == "1":
            pytest.fail("promtool is missing: run scripts/ensure-system-deps")
        pytest.skip("promtool is not installed (scripts/ensure-system-deps installs it)")
    queries = list(all_queries())
    rules = [
        {"record": f"check:query_{i}", "expr": as_sent(expr)}
        for i, (_, _, expr) in enumerate(queries)
    ]
    path = tmp_path / "queries.rules.yml"
    path.write_text(
        json.dumps({"groups": [{"name": "dashboards", "rules": rules}]})
    )  # JSON is YAML
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(queries)} rules found" in done.stdout


def test_promtool_check_refuses_a_broken_query(tmp_path: Path) -> None:
    """The parse check above can fail: a query with a missing parenthesis is refused."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    path = tmp_path / "broken.rules.yml"
    broken = {"record": "check:broken", "expr": "sum by (route (rate(safeship_x_total[1m]))"}
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": [broken]}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0


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
