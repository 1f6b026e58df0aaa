"""Fixtures for the resilience tests: fake clock, isolated registry, a misbehaving server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from safeship.resilience.testing import FakeClock, isolated_registry
from tests.resilience.http_server import Misbehaving


@pytest.fixture(autouse=True)
def _isolated_breakers() -> Iterator[None]:
    with isolated_registry():
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def name() -> str:
    """A breaker name no other test uses."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http_server() -> Iterator[Misbehaving]:
    server = Misbehaving()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def dead_redis() -> Iterator[object]:
    """A sync Redis client aimed at a closed port, without redis-py's own retries."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=RedisRetry(NoBackoff(), 0)
    )
    try:
        yield client
    finally:
        client.close()
