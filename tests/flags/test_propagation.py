"""A change reaches separate processes by push: PostgreSQL NOTIFY, or Redis for SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from safeship.db import create_engine, upgrade
from safeship.flags.store import FlagStore

WORKER = r"""
import sys
from safeship.db import create_engine
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
url, redis_url = sys.argv[1], (sys.argv[2] or None)
client = FlagClient(store=FlagStore(create_engine(url)), poll_interval=30, redis_url=redis_url)
client.start()
# "ready" only once subscribed: a change published before that would be missed.
print("ready" if client.listening.wait(60) else "not listening", flush=True)
client.add_listener(lambda v: print(f"saw {v} {client.is_enabled('shared')}", flush=True))
sys.stdin.read()
client.close()
"""


def _propagates(url: str, store: FlagStore, redis_url: str = "") -> None:
    store.create("shared", actor="t")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, redis_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        version = store.set_enabled("shared", True, actor="t").version
        for worker in workers:
            assert worker.stdout is not None
            # The poll interval is 30 s: only a push can deliver the change this soon.
            line = _readline_within(worker, 20.0)
            assert line == f"saw {version} True"
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate(timeout=10)  # reaps the process and closes its pipes


def _readline_within(worker: subprocess.Popen[str], seconds: float) -> str:
    import selectors

    assert worker.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(worker.stdout, selectors.EVENT_READ)
        if not selector.select(seconds):
            pytest.fail(f"no change reached the worker within {seconds}s")
    return worker.stdout.readline().strip()


@pytest.mark.postgres
def test_postgres_notify_reaches_other_processes(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    upgrade(engine)
    try:
        _propagates(postgres_url, FlagStore(engine))
    finally:
        engine.dispose()


@pytest.mark.redis
def test_redis_pubsub_reaches_other_processes(tmp_path: Path, redis_url: str) -> None:
    from safeship.flags.live import redis_publisher

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = create_engine(url)
    upgrade(engine)
    publish: Callable[[int], None] = redis_publisher(redis_url)
    try:
        _propagates(url, FlagStore(engine, publish=publish), redis_url)
    finally:
        engine.dispose()
