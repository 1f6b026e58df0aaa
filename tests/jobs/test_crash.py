"""kill -9 of a worker mid-job: the job runs again within 10 s (defaults), nothing is lost,
nothing completes twice.  The soak repeats kills over many jobs (``make soak``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.jobs import JobState, Worker, status

from . import worker_proc
from .conftest import wait_until

PROC = Path(__file__).with_name("worker_proc.py")
ROOT = Path(__file__).resolve().parents[2]


def _tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE started (n INT, attempt INT, at TIMESTAMPTZ)"))
        conn.execute(sa.text("CREATE TABLE effects (n INT)"))


def _spawn(url: str, slow: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(PROC), url, "1" if slow else "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


@pytest.mark.postgres
def test_kill_9_mid_job_reruns_it_within_10s_and_completes_it_once(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    _tables(pg_engine)
    worker_proc.ENGINE = pg_engine
    with pg_engine.begin() as conn:
        job = worker_proc.effect.enqueue(conn, n=1)
    proc = _spawn(pg_url, slow=True)
    try:
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM started"), timeout=30, message="start"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    killed = time.time()
    rescuer = Worker(worker_proc.jobs, pg_url)  # defaults: lease 5 s, rescue every 1 s
    thread = threading.Thread(target=rescuer.run_sync)
    thread.start()
    try:
        wait_until(lambda: status(pg_engine, job).state.finished, timeout=30, message="rerun")
    finally:
        rescuer.stop()
        thread.join(30)
    latest = "SELECT extract(epoch FROM max(at)) FROM started WHERE attempt > 0"
    with pg_engine.connect() as conn:
        rerun = float(conn.execute(sa.text(latest)).scalar_one())
    done = status(pg_engine, job)
    assert (done.state, done.crashes) == (JobState.SUCCEEDED, 1)
    assert _scalar(pg_engine, "SELECT count(*) FROM effects") == 1
    assert rerun - killed < 10.0


def _soak(pg_url: str, pg_engine: sa.Engine, jobs_count: int, kills: int) -> None:
    _tables(pg_engine)
    worker_proc.ENGINE = pg_engine
    with pg_engine.begin() as conn:
        worker_proc.jobs.enqueue_many(conn, "effect", [{"n": i} for i in range(jobs_count)])
    for _ in range(kills):
        proc = _spawn(pg_url, slow=False)
        before = _scalar(pg_engine, "SELECT count(*) FROM started")

        def going(b: int = before) -> bool:
            return _scalar(pg_engine, "SELECT count(*) FROM started") > b

        wait_until(going, timeout=30, message="worker got going")
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    survivor = _spawn(pg_url, slow=False)
    try:
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM safeship_jobs") == 0,
            timeout=120,
            message="all jobs finished",
        )
    finally:
        survivor.send_signal(signal.SIGKILL)
        survivor.wait(10)
    effects = _scalar(pg_engine, "SELECT count(DISTINCT n) FROM effects")
    total = _scalar(pg_engine, "SELECT count(*) FROM effects")
    done = _scalar(
        pg_engine, "SELECT count(*) FROM safeship_jobs_history WHERE state = 'succeeded'"
    )
    assert (effects, total, done) == (jobs_count, jobs_count, jobs_count)


@pytest.mark.postgres
def test_crash_conformance_short(pg_url: str, pg_engine: sa.Engine) -> None:
    _soak(pg_url, pg_engine, 200, 2)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SAFESHIP_SOAK"), reason="soak run: set SAFESHIP_SOAK=1")
def test_crash_conformance_soak(pg_url: str, pg_engine: sa.Engine) -> None:
    _soak(pg_url, pg_engine, 5000, 10)
