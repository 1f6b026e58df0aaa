"""Breaker state shared across processes through the real Redis, and a Redis outage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeship.resilience import Breaker, BreakerOpen, State, default_registry
from safeship.resilience.redis_shared import SharedBreakerState, share_breaker

WORKER = Path(__file__).with_name("shared_worker.py")


class Worker:
    def __init__(self, redis_url: str, name: str, window: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), redis_url, name, window],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **command: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def workers(redis_url: str, name: str, request: pytest.FixtureRequest) -> Iterator[list[Worker]]:
    import redis

    window = getattr(request, "param", "consecutive")
    pair = [Worker(redis_url, name, window), Worker(redis_url, name, window)]
    try:
        yield pair
    finally:
        for worker in pair:
            worker.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"safeship:breaker:{name}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.mark.redis
def test_one_process_opening_opens_the_other(workers: list[Worker]) -> None:
    first, second = workers
    assert first.ask(op="fail", n=3) == "open"
    assert second.ask(op="wait", state="open", seconds=5) == "open"
    assert second.ask(op="ok") == "rejected"


@pytest.mark.redis
def test_only_one_process_probes_and_its_verdict_closes_both(workers: list[Worker]) -> None:
    first, second = workers
    first.ask(op="fail", n=3)
    assert second.ask(op="wait", state="open", seconds=5) == "open"
    for worker in workers:  # both knock at once once the open period ends
        assert worker.process.stdin is not None
        worker.process.stdin.write(json.dumps({"op": "probe", "seconds": 8}) + "\n")
        worker.process.stdin.flush()
    answers = []
    for worker in workers:
        assert worker.process.stdout is not None
        answers.append(json.loads(worker.process.stdout.readline()))
    assert [a["state"] for a in answers] == ["closed", "closed"]
    assert sorted(a["trials"] for a in answers) == [0, 2]  # one fleet-wide probe of 2 trials


@pytest.mark.redis
@pytest.mark.parametrize("workers", ["count"], indirect=True)
def test_failures_spread_over_processes_open_the_fleet(workers: list[Worker]) -> None:
    first, second = workers
    assert first.ask(op="fail", n=3) == "closed"  # 3 calls: below the minimum of 6 alone
    assert second.ask(op="fail", n=3) == "closed"
    assert first.ask(op="wait", state="open", seconds=5) == "open"
    assert second.ask(op="wait", state="open", seconds=5) == "open"


@pytest.mark.redis
def test_manual_overrides_reach_every_process(workers: list[Worker]) -> None:
    first, second = workers
    assert first.ask(op="force_open") == "forced_open"
    assert second.ask(op="wait", state="forced_open", seconds=5) == "forced_open"
    assert second.ask(op="reset") == "closed"
    assert first.ask(op="wait", state="closed", seconds=5) == "closed"


def test_an_unreachable_redis_leaves_the_breaker_deciding_alone(
    dead_redis: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Breaker(name, open_duration=0.05, half_open_calls=1, registry=default_registry)
    with share_breaker(breaker, dead_redis, interval=0.01) as shared:
        assert isinstance(shared, SharedBreakerState)
        while shared.errors < 3:
            time.sleep(0.005)
        for _ in range(5):
            with pytest.raises(ConnectionError):
                breaker.call(_fail)
        assert breaker.state is State.OPEN
        with pytest.raises(BreakerOpen):
            breaker.call(lambda: None)
        time.sleep(0.06)
        assert breaker.call(lambda: "back") == "back"  # probes without the fleet lease
        assert breaker.state is State.CLOSED
        assert not shared.healthy
    assert "resilience.shared.redis_unavailable" in caplog.text


@pytest.mark.redis
def test_the_exchange_recovers_when_redis_answers(redis_url: str, name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    breaker = Breaker(name, registry=default_registry)
    shared = SharedBreakerState(breaker, client, prefix=f"safeship:test:{uuid.uuid4().hex}:")
    try:
        assert shared.exchange_once()
        assert shared.healthy
    finally:
        for key in client.scan_iter(f"{shared.key}*", count=1000):
            client.delete(key)
        client.close()


def _fail() -> None:
    raise ConnectionError("down")
