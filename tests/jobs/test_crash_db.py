"""Database faults under a running worker: its connections killed mid-job
(``pg_terminate_backend``), and a paused database (a frozen TCP proxy).  Each job writes its
effect and completes itself in one transaction (``ctx.complete(conn)``), so an effect row
exists iff the job is done: a job lost shows as a missing row, a double completion as two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine
from safeship.jobs import JobContext, Jobs, JobState, Worker, status
from tests.support.freeze_proxy import FreezeProxy

from .conftest import wait_until

APP = "safeship-crash-worker"


def _tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE started (n INT, attempt INT)"))
        conn.execute(sa.text("CREATE TABLE effects (n INT)"))


def _registry(engine: sa.Engine, seconds: float) -> tuple[Jobs, Any]:
    jobs = Jobs()

    @jobs.task(queue="dbfault")
    def effect(ctx: JobContext, n: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO started (n, attempt) VALUES (:n, :a)"),
                {"n": n, "a": ctx.attempt},
            )
        time.sleep(seconds)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO effects (n) VALUES (:n)"), {"n": n})
            ctx.complete(conn)

    return jobs, effect


def _scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


def _with_app(url: str, app: str = APP) -> str:
    return f"{url}?application_name={app}"


def _kill_worker_backends(engine: sa.Engine, app: str = APP) -> int:
    """Terminate this test worker's own backends (by application_name, in this database)."""
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :app "
                "AND pid <> pg_backend_pid()"
            ),
            {"app": app},
        ).scalar_one()
    return int(killed)


def _start(worker: Worker, workers: list[Worker], threads: list[threading.Thread]) -> None:
    thread = threading.Thread(target=worker.run_sync, daemon=True)
    workers.append(worker)
    threads.append(thread)
    thread.start()


def _assert_each_done_once(engine: sa.Engine, ids: list[uuid.UUID], count: int) -> None:
    assert _scalar(engine, "SELECT count(*) FROM effects") == count
    assert _scalar(engine, "SELECT count(DISTINCT n) FROM effects") == count
    states = {status(engine, job).state for job in ids}
    assert states == {JobState.SUCCEEDED}


def _run_connection_kills(pg_url: str, pg_engine: sa.Engine, *, jobs_n: int, kills: int) -> None:
    _tables(pg_engine)
    jobs, effect = _registry(pg_engine, 0.2)
    with pg_engine.begin() as conn:
        ids = jobs.enqueue_many(conn, effect, [{"n": n} for n in range(jobs_n)])
    worker = Worker(jobs, _with_app(pg_url), concurrency=4, lease=2.0, heartbeat=0.4)
    workers: list[Worker] = []
    threads: list[threading.Thread] = []
    killed = 0
    try:
        _start(worker, workers, threads)
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM started"), timeout=20, message="start"
        )
        for _ in range(kills):
            # Kill claim, outcome and heartbeat connections while jobs run.
            wait_until(lambda: _kill_worker_backends(pg_engine) > 0, timeout=10, message="backends")
            killed += 1
            time.sleep(0.5)
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM effects") >= jobs_n,
            timeout=60,
            message="all jobs done after connection kills",
        )
        # Give a double completion (a rescue of a job already done) time to show.
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM safeship_jobs") == 0,
            timeout=20,
            message="hot table empty",
        )
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
    assert killed == kills
    _assert_each_done_once(pg_engine, ids, jobs_n)


@pytest.mark.postgres
def test_worker_connections_killed_mid_job_nothing_lost_nothing_twice(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    _run_connection_kills(pg_url, pg_engine, jobs_n=30, kills=3)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SAFESHIP_SOAK"), reason="soak run: set SAFESHIP_SOAK=1")
def test_soak_worker_connections_killed_repeatedly(pg_url: str, pg_engine: sa.Engine) -> None:
    _run_connection_kills(pg_url, pg_engine, jobs_n=600, kills=40)


# -- a paused database ------------------------------------------------------------------------


def _proxied(url: str, port: int) -> str:
    assert "127.0.0.1:5432" in url
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


@pytest.mark.postgres
def test_paused_database_job_rescued_once_late_finish_refused(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    _tables(pg_engine)
    _pause_once(pg_url, pg_engine)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SAFESHIP_SOAK"), reason="soak run: set SAFESHIP_SOAK=1")
def test_soak_paused_database_repeatedly(pg_url: str, pg_engine: sa.Engine) -> None:
    _tables(pg_engine)
    for _ in range(8):
        with pg_engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE started, effects"))
        _pause_once(pg_url, pg_engine)


def _pause_once(pg_url: str, pg_engine: sa.Engine) -> None:
    proxy = FreezeProxy("127.0.0.1", 5432)
    paused_url = _proxied(pg_url, proxy.port)
    paused_engine = create_engine(paused_url)
    jobs_a, _ = _registry(paused_engine, 1.0)  # the paused worker's handlers use its database
    jobs_b, effect = _registry(pg_engine, 0.0)
    with pg_engine.begin() as conn:
        job = effect.enqueue(conn, n=1)
    a = Worker(jobs_a, paused_url, lease=2.0, heartbeat=0.4, rescue_every=0.5, cron=False)
    b = Worker(jobs_b, pg_url, lease=2.0, heartbeat=0.4, rescue_every=0.5, cron=False)
    workers: list[Worker] = []
    threads: list[threading.Thread] = []
    try:
        _start(a, workers, threads)
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM started"), timeout=20, message="start"
        )
        proxy.freeze()
        frozen = time.monotonic()
        _start(b, workers, threads)
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM effects"),
            timeout=20,
            message="rescued and rerun by the other worker",
        )
        rescued = time.monotonic() - frozen
        print(f"rescued and rerun {rescued:.2f} s after the database paused")
        time.sleep(max(0.0, 4.0 - rescued))  # paused longer than twice the lease
        proxy.thaw()
        wait_until(lambda: a.lost >= 1, timeout=20, message="the paused worker's late finish")
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
        paused_engine.dispose()
        proxy.close()
    done = status(pg_engine, job)
    assert done.state is JobState.SUCCEEDED
    assert done.crashes == 1  # the lost attempt counts as a crash, not an error attempt
    assert _scalar(pg_engine, "SELECT count(*) FROM effects") == 1
    assert _scalar(pg_engine, "SELECT count(*) FROM started") == 2
    assert rescued < 2.0 + 0.5 + 2.0  # lease + rescue_every + slack


@pytest.mark.postgres
def test_worker_stops_within_its_deadline_while_the_database_is_paused(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    _tables(pg_engine)
    proxy = FreezeProxy("127.0.0.1", 5432)
    paused_url = _proxied(pg_url, proxy.port)
    paused_engine = create_engine(paused_url)
    jobs_a, effect = _registry(paused_engine, 0.5)
    with pg_engine.begin() as conn:
        jobs_a.enqueue_many(conn, effect, [{"n": n} for n in range(4)])
    a = Worker(jobs_a, paused_url, lease=2.0, heartbeat=0.4, shutdown_grace=1.0, cron=False)
    thread = threading.Thread(target=a.run_sync, daemon=True)
    try:
        thread.start()
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM started"), timeout=20, message="start"
        )
        proxy.freeze()
        time.sleep(0.5)
        asked = time.monotonic()
        a.stop()  # what the CLI's SIGTERM handler calls
        thread.join(20)
        took = time.monotonic() - asked
        assert not thread.is_alive(), "the worker hung on a paused database"
    finally:
        if thread.is_alive():
            a.stop()
        proxy.thaw()
        thread.join(30)
        paused_engine.dispose()
        proxy.close()
    print(f"stopped {took:.2f} s after stop() with the database paused")
    assert took < 1.0 + 2.0 + 5.0, took  # grace + the final flush (lease) + closing (bounded)


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_process_exits_on_sigterm_while_the_database_is_paused(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    from tests.support import jobs_sleep_app

    proxy = FreezeProxy("127.0.0.1", 5432)
    paused_url = _proxied(pg_url, proxy.port)
    with pg_engine.begin() as conn:
        jobs_sleep_app.jobs.enqueue_many(
            conn, jobs_sleep_app.sleepy, [{"seconds": 2.0} for _ in range(4)]
        )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src") + os.pathsep + str(root)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from safeship.cli_entry import main; main()",
            "jobs",
            "worker",
            "--app",
            "tests.support.jobs_sleep_app:jobs",
            "--database-url",
            paused_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (
                _scalar(pg_engine, "SELECT count(*) FROM safeship_jobs WHERE state = 'running'")
                == 4
            ),
            timeout=30,
            message="the worker process runs the jobs",
        )
        proxy.freeze()
        time.sleep(0.5)
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proxy.thaw()
        proxy.close()
    print(f"worker process exited {took:.2f} s after SIGTERM with the database paused")
    assert code == 0
    # Defaults: shutdown_grace 10 s (the handlers end after 2 s), the final flush at most
    # lease (5 s), closing connections and joining the heartbeat thread (bounded).
    assert took < 20.0, took
    # Nothing lost: the outcomes the paused worker could not write come back by rescue.
    rescuer = Worker(jobs_sleep_app.jobs, pg_url, cron=False)
    thread = threading.Thread(target=rescuer.run_sync, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: _scalar(pg_engine, "SELECT count(*) FROM safeship_jobs") == 0,
            timeout=30,
            message="every job finished after the pause",
        )
    finally:
        rescuer.stop()
        thread.join(30)
