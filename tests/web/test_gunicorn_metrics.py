"""Under gunicorn with two uvicorn workers, the scraped metrics add up over the workers.

gunicorn runs with the ``gunicorn.conf.py`` that docs/metrics.md shows (the test takes
it from there, so the documented snippet is the tested one), ``PROMETHEUS_MULTIPROC_DIR``
set to an empty directory, on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.web.server_process import HERE, STARTUP_SECONDS, _wait_ready

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
ROUTE = "/work/{n}"
REQUESTS = 60
MAX_REQUESTS = 2_000  # connections that may all land on one worker before the test gives up
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_CONFIG_BLOCK = re.compile(r"```python\n(# gunicorn\.conf\.py\n.*?)```", re.DOTALL)


def documented_config() -> str:
    """The ``gunicorn.conf.py`` snippet of docs/metrics.md."""
    match = _CONFIG_BLOCK.search(DOCS.read_text())
    assert match, "docs/metrics.md lost its gunicorn.conf.py snippet"
    return match.group(1)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10.0) -> object:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def gunicorn(tmp_path: Path) -> Iterator[str]:
    """Run ``serve_apps:metrics_app`` under gunicorn (2 uvicorn workers); yield its URL."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(documented_config())
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "serve_apps:metrics_app",
        "-c", str(config), "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
        "-b", "127.0.0.1:0", "--error-logfile", str(log), "--graceful-timeout", "5",
    ]  # fmt: skip
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen(command, cwd=HERE, env=env, start_new_session=True)
    try:

        def port() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited {process.returncode}: {log.read_text()}")
            found = _LISTENING.search(log.read_text()) if log.exists() else None
            return found.group(1) if found else None

        url = f"http://127.0.0.1:{wait_for(port, 'gunicorn to listen')}"
        _wait_ready(url, "/metrics", time.monotonic() + STARTUP_SECONDS, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the session started for this gunicorn
            process.wait()


def fresh_get(url: str) -> httpx.Response:
    """GET on a new connection, so the kernel may hand it to either worker."""
    with httpx.Client(timeout=5.0) as client:
        return client.get(url)


def work_total(url: str) -> float:
    """``safeship_http_requests_total`` of the work route, summed over every series."""
    text = fresh_get(url + "/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "safeship_http_requests_total" and sample.labels["route"] == ROUTE
    )


@pytest.mark.slow
def test_gunicorn_two_workers_report_one_total(tmp_path: Path) -> None:
    with gunicorn(tmp_path) as url:
        pids: set[str] = set()
        sent = 0
        # Bounded by count, not by time: a loaded machine serves fewer requests a second.
        while (len(pids) < 2 or sent < REQUESTS) and sent < MAX_REQUESTS:
            response = fresh_get(f"{url}/work/{sent}")
            assert response.status_code == 200
            pids.add(response.headers["x-worker-pid"])
            sent += 1
        assert len(pids) == 2, "the kernel never handed a connection to the second worker"
        assert sent >= REQUESTS
        for _ in range(4):  # scrapes land on either worker; each sees every worker's count
            assert work_total(url) == sent

        # A worker exits: gunicorn's child_exit hook (the documented config) drops its
        # live gauge file, and its counts stay in the total.
        gone = sorted(pids)[0]
        live_file = tmp_path / "metrics" / f"gauge_livesum_{gone}.db"
        assert live_file.exists()
        os.kill(int(gone), signal.SIGTERM)
        wait_for(lambda: not live_file.exists(), "child_exit to mark the worker dead")
        _wait_ready(url, "/metrics", time.monotonic() + 15)
        assert work_total(url) == sent
