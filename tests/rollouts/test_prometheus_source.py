"""The guard fed from a real Prometheus scraping a real exporter, deciding on real PostgreSQL."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from safeship.db import create_engine, upgrade
from safeship.flags.store import FlagStore
from safeship.rollouts import Plan, RolloutGuard
from safeship.rollouts.prometheus import (
    PrometheusAgent,
    PrometheusError,
    PrometheusQueries,
    PrometheusSource,
    _increase,
)
from tests.conftest import REQUIRE_SERVICES

QUERIES = PrometheusQueries(
    requests='sum by (instance) (app_requests_total{arm="{arm}"})',
    errors='sum by (instance) (app_errors_total{arm="{arm}"})',
    slow='sum by (instance) (app_request_seconds_count{arm="{arm}"})'
    ' - sum by (instance) (app_request_seconds_bucket{arm="{arm}",le="{threshold}"})',
    threshold=0.25,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, PrometheusError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Exporter:
    """The app's metrics: per arm requests, errors and a latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("app_requests", "Requests.", ["arm"], registry=self.registry)
        self.errors = Counter("app_errors", "Errors.", ["arm"], registry=self.registry)
        self.latency = Histogram(
            "app_request_seconds", "Latency.", ["arm"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0),
        )  # fmt: skip
        for arm in ("control", "candidate"):
            self.requests.labels(arm)
            self.errors.labels(arm)
            self.latency.labels(arm)
        self.port = _free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def serve(self, arm: str, *, requests: int, errors: int, slow: int = 0) -> None:
        for i in range(requests):
            self.requests.labels(arm).inc()
            if i < errors:
                self.errors.labels(arm).inc()
            self.latency.labels(arm).observe(0.4 if i < slow else 0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    yield exp
    exp.close()


@pytest.fixture
def prometheus_url(exporter: Exporter, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "the prometheus binary is missing (apt-get install prometheus)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and SAFESHIP_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait("prometheus to be ready", lambda: httpx.get(f"{url}/-/ready").status_code == 200)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _scraped(source: PrometheusSource, arm: str, requests: int, errors: int) -> Callable[[], bool]:
    def check() -> bool:
        got_r = source.instant(f'sum(app_requests_total{{arm="{arm}"}})')
        got_e = source.instant(f'sum(app_errors_total{{arm="{arm}"}})')
        return got_r.get("") == requests and got_e.get("") == errors

    return check


@pytest.mark.postgres
def test_guard_rolls_back_from_prometheus_data_alone(
    prometheus_url: str, exporter: Exporter, engine: sa.Engine
) -> None:
    flags = FlagStore(engine)
    guard = RolloutGuard(engine, flags)
    guard.create("orders-batched", actor="alice", plan=Plan(steps=(50, 100)))
    source = PrometheusSource(url=prometheus_url, queries={"orders-batched": QUERIES})
    agent = PrometheusAgent(guard, source, ["orders-batched"], interval=1.0)
    try:
        exporter.serve("control", requests=50, errors=0)
        exporter.serve("candidate", requests=50, errors=0)
        for arm in ("control", "candidate"):
            _wait(f"{arm} baseline scraped", _scraped(source, arm, 50, 0))
        assert agent.tick() == []  # first read: baseline only
        assert guard.windows("orders-batched") == []

        # A healthy window: same error rate, a few slow requests on each arm.
        exporter.serve("control", requests=400, errors=4, slow=10)
        exporter.serve("candidate", requests=400, errors=4, slow=12)
        for arm in ("control", "candidate"):
            _wait(f"{arm} healthy window scraped", _scraped(source, arm, 450, 4))
        assert agent.tick() == []  # healthy, not held long enough to advance
        [(_, _, control, candidate)] = guard.windows("orders-batched")
        assert (control.requests, control.errors, control.exceedances) == (400, 4, 10)
        assert (candidate.requests, candidate.errors, candidate.exceedances) == (400, 4, 12)
        assert guard.get("orders-batched").status == "running"
        assert agent.tick() == []  # nothing new: no window, nothing counted twice
        assert len(guard.windows("orders-batched")) == 1

        # The candidate breaks.
        exporter.serve("control", requests=400, errors=4)
        exporter.serve("candidate", requests=400, errors=120)
        _wait("control broken window scraped", _scraped(source, "control", 850, 8))
        _wait("candidate broken window scraped", _scraped(source, "candidate", 850, 124))
        decisions = agent.tick()
        assert [d.kind for d in decisions] == ["rolled_back"]
        assert decisions[0].evidence["verdict"]["breached_metric"] == "errors"
        assert not flags.get("orders-batched").enabled
        assert guard.get("orders-batched").status == "rolled_back"
        windows = guard.windows("orders-batched")
        assert [w[3].errors for w in windows] == [4, 120]
        assert sum(w[2].requests + w[3].requests for w in windows) == 1600
    finally:
        agent.close()
        source.close()


def test_prometheus_failures_are_logged_once_and_never_raise(
    prometheus_url: str, exporter: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    class NoGuard:
        def record_window(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("nothing to record when Prometheus fails")

        def evaluate(self, name: str) -> None:
            return None

    down = PrometheusSource(url=f"http://127.0.0.1:{_free_port()}", queries={"r": QUERIES},
                            timeout=0.5)  # fmt: skip
    bad = PrometheusSource(
        url=prometheus_url,
        queries={"r": PrometheusQueries(requests="sum(({arm}", errors='x{a="{arm}"}')},
    )
    empty = PrometheusSource(
        url=prometheus_url,
        queries={
            "r": PrometheusQueries(requests='nothing_total{a="{arm}"}', errors='x{a="{arm}"}')
        },
    )
    with pytest.raises(PrometheusError, match="parse error"):
        bad.read("r")
    with pytest.raises(PrometheusError, match="no data"):
        empty.read("r")
    for source in (down, bad, empty):
        agent = PrometheusAgent(NoGuard(), source)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="safeship.rollouts"):
            assert agent.tick() == []
            assert agent.tick() == []
        failures = [r for r in caplog.records if "prometheus_read_failed" in r.getMessage()]
        assert len(failures) == 1
        source.close()


def test_counter_resets_new_and_missing_series() -> None:
    assert _increase({"a": 10, "b": 5}, {"a": 15, "b": 7}) == 7
    assert _increase({"a": 10}, {"a": 3}) == 3  # reset: the new total is the increase
    assert _increase({"a": 10}, {"a": 10, "b": 4}) == 4  # a new process
    assert _increase({"a": 10, "b": 4}, {"a": 12}) == 2  # b missed a scrape: kept, not lost


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="url"):
        PrometheusSource(url="127.0.0.1:9090", queries={"r": QUERIES})
    with pytest.raises(ValueError, match="timeout"):
        PrometheusSource(url="http://127.0.0.1:9090", queries={"r": QUERIES}, timeout=0)
    with pytest.raises(ValueError, match="queries"):
        PrometheusSource(url="http://127.0.0.1:9090", queries={})
    with pytest.raises(ValueError, match="arm"):
        PrometheusQueries(requests="sum(x)", errors='x{a="{arm}"}')
    with pytest.raises(ValueError, match="threshold"):
        PrometheusQueries(requests='x{a="{arm}"}', errors='x{a="{arm}"}',
                          slow='y{a="{arm}",le="{threshold}"}')  # fmt: skip
    with pytest.raises(ValueError, match="differ"):
        PrometheusQueries(requests='x{a="{arm}"}', errors='x{a="{arm}"}', control_arm="candidate")
    source = PrometheusSource(url="http://127.0.0.1:9090", queries={"r": QUERIES})
    with pytest.raises(ValueError, match="names without"):
        PrometheusAgent(object(), source, ["other"])  # type: ignore[arg-type]
    source.close()
    assert QUERIES.query("candidate", "slow") == (
        'sum by (instance) (app_request_seconds_count{arm="candidate"})'
        ' - sum by (instance) (app_request_seconds_bucket{arm="candidate",le="0.25"})'
    )
