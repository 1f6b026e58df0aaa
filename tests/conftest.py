"""Shared fixtures: real services, or a skip (a failure when SAFESHIP_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import hypothesis
import pytest

#: The suite's switch, read once at import (every xdist worker inherits it), then hidden
#: from the code under test: safeship treats unknown ``SAFESHIP_*`` variables as typos.
SUITE_SWITCH = "SAFESHIP_REQUIRE_SERVICES"
REQUIRE_SERVICES = os.environ.get(SUITE_SWITCH) == "1"

# The suite's own variables live outside safeship's ``SAFESHIP_`` namespace.
POSTGRES_URL = os.environ.get(
    "TEST_SAFESHIP_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_SAFESHIP_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TEST_SAFESHIP_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("TEST_SAFESHIP_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


# A wall-clock budget per example is a timing assertion: on a loaded machine (parallel
# workers, other jobs) it fails tests whose logic is right. Properties check logic only.
hypothesis.settings.register_profile(
    "suite", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("suite")

#: Tests that compare timings (ratios of medians, a deadline's resolution, linear time) or
#: load the CPU for many seconds. Under ``--dist loadgroup`` they all run on one worker, one
#: after another, so no timing measurement shares the machine with a CPU-heavy neighbour of
#: the suite. Everything else is safe to run beside anything (unique names, free ports).
EXCLUSIVE = (
    "tests/web/test_timing.py::",
    "tests/resilience/test_breaker_memory.py::",
    "tests/web/test_hot_paths.py::test_timeout_answers_504_within_its_resolution",
    "tests/observe/test_logging_hot_paths.py::test_masking_long_values_takes_linear_time",
    "tests/rollouts/test_stats.py::",
    "tests/server/test_fuzz.py::",
    "tests/resilience/test_breaker_model.py::",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(EXCLUSIVE):
            item.add_marker(pytest.mark.xdist_group("exclusive"))


@pytest.fixture(scope="session", autouse=True)
def _suite_switch_hidden_from_safeship() -> Iterator[None]:
    """Tests, and the servers and commands they start, see the environment a user has."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(SUITE_SWITCH, raising=False)
        yield


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip the test when a server is down, or fail it when CI requires every service."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and SAFESHIP_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema-isolated database URL (psycopg 3 driver) for one test."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    admin = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"safeship_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def nats_url() -> str:
    need_service("NATS", "127.0.0.1", 4222)
    return NATS_URL


@pytest.fixture
def rabbitmq_url() -> str:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were, whatever the test configured
    (handlers it added are closed, so their pending lines are written)."""
    import logging

    import structlog

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _root_handlers_end_with_their_test() -> Iterator[None]:
    """A handler a test installed on the root logger (``configure_logging`` run by a CLI
    command under CliRunner, say) is closed when the test ends, so it never writes to a
    stream that is gone in a later test of the same worker."""
    import logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler in before or type(handler).__module__.startswith("_pytest"):
            continue
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
