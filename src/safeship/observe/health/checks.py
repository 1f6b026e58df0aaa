"""Built-in check factories: each returns a callable for `HealthRegistry.add`.

Client libraries import lazily, so a check for a service you do not use costs nothing.
Sync callables are run by the registry in a daemon thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from safeship.observe.health._model import CheckFn, CheckResult

AsyncCheck = Callable[[], Awaitable[Any]]


def _missing(extra: str, module: str) -> ImportError:
    return ImportError(
        f"this health check needs the {module!r} package: pip install 'safeship[{extra}]'"
    )


def sql_check(engine: Any, *, query: str = "SELECT 1") -> CheckFn:
    """Check a SQLAlchemy ``Engine`` or ``AsyncEngine`` by running ``SELECT 1``."""
    import sqlalchemy as sa

    statement = sa.text(query)
    if hasattr(engine, "sync_engine"):  # an AsyncEngine

        async def check_async_engine() -> str:
            async with engine.connect() as conn:
                await conn.execute(statement)
            return f"{engine.dialect.name} ok"

        return check_async_engine

    def check_engine() -> str:
        with engine.connect() as conn:
            conn.execute(statement)
        return f"{engine.dialect.name} ok"

    return check_engine


def schema_check(engine: Any) -> CheckFn:
    """Fail while safeship's tables are not at the revision this release needs.

    Readiness then says "schema at 0003_breakers, package needs 0006_sessions: run
    `safeship db upgrade`" instead of the app answering 500 after a business write.
    Takes an ``Engine`` or an ``AsyncEngine``; needs the ``db`` extra (Alembic).
    """
    from safeship.db._migrate import SchemaMismatchError, ensure_current_on, head_revision

    head_revision()  # a broken install fails here, at wiring time, not in the probe

    def outcome(conn: Any) -> CheckResult:
        try:
            revision = ensure_current_on(conn)
        except SchemaMismatchError as exc:
            return CheckResult(status="fail", output=str(exc), component_type="datastore")
        return CheckResult(status="pass", observed_value=revision, component_type="datastore")

    if hasattr(engine, "sync_engine"):  # an AsyncEngine

        async def check_async_schema() -> CheckResult:
            async with engine.connect() as conn:
                result: CheckResult = await conn.run_sync(outcome)
            return result

        return check_async_schema

    def check_schema() -> CheckResult:
        with engine.connect() as conn:
            return outcome(conn)

    return check_schema


def redis_check(url: str, *, connect_timeout: float = 1.0) -> AsyncCheck:
    """Check a Redis server with ``PING`` (one short-lived connection per run)."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        raise _missing("redis", "redis") from exc

    async def check_redis() -> str:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout
        )
        try:
            await client.ping()
        finally:
            await client.aclose()
        return "PONG"

    return check_redis


def nats_check(url: str, *, connect_timeout: float = 1.0) -> AsyncCheck:
    """Check a NATS server by connecting and flushing a round trip."""
    try:
        import nats
    except ImportError as exc:
        raise _missing("nats", "nats-py") from exc

    async def check_nats() -> str:
        nc = await nats.connect(
            url,
            connect_timeout=connect_timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        try:
            await nc.flush(timeout=max(1, math.ceil(connect_timeout)))
        finally:
            await nc.close()
        return "connected"

    return check_nats


def rabbitmq_check(url: str, *, connect_timeout: float = 1.0) -> AsyncCheck:
    """Check a RabbitMQ broker by opening (and closing) an AMQP connection."""
    try:
        import aio_pika
    except ImportError as exc:
        raise _missing("rabbitmq", "aio-pika") from exc

    async def check_rabbitmq() -> str:
        connection = await aio_pika.connect(url, timeout=connect_timeout)
        await connection.close()
        return "connected"

    return check_rabbitmq


def disk_check(path: str | Path, min_free_bytes: int) -> Callable[[], CheckResult]:
    """Fail when the file system holding ``path`` has less than ``min_free_bytes`` free."""
    if min_free_bytes < 0:
        raise ValueError("disk_check: min_free_bytes must be >= 0")
    target = Path(path)

    def check_disk() -> CheckResult:
        free = shutil.disk_usage(target).free
        ok = free >= min_free_bytes
        return CheckResult(
            status="pass" if ok else "fail",
            observed_value=free,
            observed_unit="bytes",
            component_type="system",
            output=None if ok else f"{free} bytes free under {target}, need {min_free_bytes}",
        )

    return check_disk


def _settle(future: asyncio.Future[float], loop: asyncio.AbstractEventLoop) -> None:
    if not future.done():
        future.set_result(loop.time())


def event_loop_lag_check(max_lag_seconds: float = 0.5) -> AsyncCheck:
    """Fail when a callback scheduled now waits more than ``max_lag_seconds`` to run."""
    if max_lag_seconds <= 0:
        raise ValueError("event_loop_lag_check: max_lag_seconds must be > 0")

    async def check_event_loop_lag() -> CheckResult:
        loop = asyncio.get_running_loop()
        ran: asyncio.Future[float] = loop.create_future()
        scheduled = loop.time()
        loop.call_soon(_settle, ran, loop)
        lag = max(0.0, await ran - scheduled)
        ok = lag <= max_lag_seconds
        return CheckResult(
            status="pass" if ok else "fail",
            observed_value=round(lag, 6),
            observed_unit="s",
            component_type="system",
            output=None if ok else f"event loop lag {lag:.3f}s > {max_lag_seconds:g}s",
        )

    return check_event_loop_lag
