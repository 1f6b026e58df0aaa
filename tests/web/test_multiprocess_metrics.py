"""Metrics of several uvicorn worker processes add up (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.web.server_process import serve

_SERIES = re.compile(
    r'^safeship_http_requests_total\{method="GET",route="/work/\{n\}",status="200"\} (\S+)$',
    re.MULTILINE,
)


def work_total(metrics_text: str) -> float:
    match = _SERIES.search(metrics_text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_two_worker_processes_share_one_total(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with (
        serve("serve_apps:metrics_app", env=env, ready_path="/metrics") as first,
        serve("serve_apps:metrics_app", env=env, ready_path="/metrics") as second,
    ):
        pids = set()
        for served, count in ((first, 7), (second, 5)):
            for n in range(count):
                response = httpx.get(f"{served.url}/work/{n}")
                pids.add(response.headers["x-worker-pid"])
        assert len(pids) == 2
        assert work_total(httpx.get(first.url + "/metrics").text) == 12
        assert work_total(httpx.get(second.url + "/metrics").text) == 12


@pytest.mark.slow
def test_uvicorn_workers_2_totals_match_requests(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with serve("serve_apps:metrics_app", env=env, workers=2, ready_path="/metrics") as served:
        pids: set[str] = set()
        sent = 0
        while len(pids) < 2 and sent < 400:
            with httpx.Client() as fresh:  # a new connection each time, spread over workers
                pids.add(fresh.get(f"{served.url}/work/{sent}").headers["x-worker-pid"])
            sent += 1
        assert len(pids) == 2, "the kernel never handed a connection to the second worker"
        assert work_total(httpx.get(served.url + "/metrics").text) == sent
