"""Connectivity checks behind ``safeship check``: settings, database, Redis, broker.

Each check returns a ``CheckOutcome``; none raises, and none takes longer than
:data:`CHECK_DEADLINE` seconds, whatever the server at the other end does (refuses,
accepts and never answers).  The CLI prints them and exits non-zero when any failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa

from safeship.db._engine import create_engine
from safeship.db._migrate import current_revision, describe_mismatch, head_revision
from safeship.db._pool import pool_report
from safeship.settings import Settings

Status = Literal["ok", "warn", "fail"]

#: The most one check may take, in seconds; a server that has not answered by then fails.
CHECK_DEADLINE = 8.0
_CONNECT_TIMEOUT = 3


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    name: str
    status: Status
    detail: str


def _guard(name: str, fn: Callable[[], CheckOutcome]) -> CheckOutcome:
    """Run one check in a daemon thread: its outcome, a failure line for its error, or a
    failure when it has not finished within :data:`CHECK_DEADLINE` (the thread is left to
    end on its own; being a daemon, it never holds the process open)."""
    result: list[CheckOutcome] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as exc:  # noqa: BLE001 - every failure becomes a line in the report
            result.append(CheckOutcome(name, "fail", f"{type(exc).__name__}: {_first_line(exc)}"))

    worker = threading.Thread(target=run, name=f"safeship-check-{name}", daemon=True)
    worker.start()
    worker.join(CHECK_DEADLINE)
    if result:
        return result[0]
    return CheckOutcome(name, "fail", f"no answer within {CHECK_DEADLINE:.0f}s")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no detail"


def check_database(settings: Settings) -> list[CheckOutcome]:
    """Reach the database, compare its schema with this release, and budget its pool."""
    engine = create_engine(settings=settings)
    try:
        outcomes = [_guard("database", lambda: _database_reachable(engine))]
        if outcomes[0].status == "fail":
            return outcomes
        outcomes.append(_guard("migrations", lambda: _migrations(engine)))
        if engine.dialect.name == "postgresql":
            outcomes.append(_guard("connection pool", lambda: _pool(engine, settings)))
        return outcomes
    finally:
        engine.dispose()


def _database_reachable(engine: sa.Engine) -> CheckOutcome:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        version = conn.dialect.server_version_info or ()
    shown = engine.url.render_as_string(hide_password=True)
    return CheckOutcome("database", "ok", f"{shown} answers (server {'.'.join(map(str, version))})")


def _migrations(engine: sa.Engine) -> CheckOutcome:
    current, head = current_revision(engine), head_revision()
    if current == head:
        return CheckOutcome("migrations", "ok", f"at {head}")
    # The library refuses a stale schema (readiness fails), so the check fails too.
    return CheckOutcome("migrations", "fail", describe_mismatch(current, head))


def _pool(engine: sa.Engine, settings: Settings) -> CheckOutcome:
    with engine.connect() as conn:
        report = pool_report(
            conn,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            processes=settings.db_expected_processes,
            reserve=settings.db_connection_reserve,
        )
    return CheckOutcome("connection pool", "ok" if report.fits else "warn", report.describe())


def check_redis(url: str) -> CheckOutcome:
    def run() -> CheckOutcome:
        try:
            import redis
        except ImportError:
            return CheckOutcome("redis", "fail", "pip install safeship[redis] to use Redis")
        client = redis.Redis.from_url(
            url, socket_timeout=_CONNECT_TIMEOUT, socket_connect_timeout=_CONNECT_TIMEOUT
        )
        try:
            client.ping()
        finally:
            client.close()
        return CheckOutcome("redis", "ok", f"{_safe(url)} answers PING")

    return _guard("redis", run)


def check_broker(url: str) -> CheckOutcome:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        outcome = check_redis(url)
        return CheckOutcome("broker", outcome.status, outcome.detail)
    return _guard("broker", lambda: asyncio.run(_broker(url, scheme)))


async def _broker(url: str, scheme: str) -> CheckOutcome:
    if scheme in ("nats", "tls"):
        try:
            import nats
            import nats.aio.client
        except ImportError:
            return CheckOutcome("broker", "fail", "pip install safeship[nats] to use NATS")
        await _nats_answers(nats, url)
        return CheckOutcome("broker", "ok", f"{_safe(url)}: NATS with JetStream answers")
    if scheme in ("amqp", "amqps"):
        try:
            import aio_pika
        except ImportError:
            return CheckOutcome("broker", "fail", "pip install safeship[rabbitmq] to use RabbitMQ")
        connection = await asyncio.wait_for(
            aio_pika.connect(url, timeout=_CONNECT_TIMEOUT), CHECK_DEADLINE - 1
        )
        await connection.close()
        return CheckOutcome("broker", "ok", f"{_safe(url)}: RabbitMQ accepts the login")
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 9092)
    with socket.create_connection(address, _CONNECT_TIMEOUT):
        pass
    return CheckOutcome("broker", "ok", f"{_safe(url)}: port open")


async def _nats_answers(nats: Any, url: str) -> None:
    """Connect once (no retries, errors kept out of the log) and ask JetStream."""
    client = nats.aio.client.Client()

    async def quiet(_: Exception) -> None:
        return None  # the outcome line reports the failure; no traceback in the log

    try:
        await asyncio.wait_for(
            client.connect(
                url,
                connect_timeout=_CONNECT_TIMEOUT,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=quiet,
            ),
            CHECK_DEADLINE - 1,
        )
        await asyncio.wait_for(client.jetstream().account_info(), _CONNECT_TIMEOUT)
    except TimeoutError:
        raise TimeoutError(f"no answer from {_safe(url)} within the deadline") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 1.0)


def _safe(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def run_checks(settings: Settings) -> list[CheckOutcome]:
    outcomes = [CheckOutcome("settings", "ok", f"valid for {settings.environment}")]
    outcomes.extend(check_database(settings))
    if settings.redis_url:
        outcomes.append(check_redis(settings.redis_url))
    if settings.broker_url:
        outcomes.append(check_broker(settings.broker_url))
    return outcomes
