"""Built-in checks against the real services (skipped when a server is down)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from safeship.observe.health import (
    HealthRegistry,
    nats_check,
    rabbitmq_check,
    redis_check,
    sql_check,
)


async def _status(fn: object, limit: float = 3.0) -> tuple[str, str | None]:
    registry = HealthRegistry()
    registry.add("x", fn, timeout=limit)  # type: ignore[arg-type]
    result = (await registry.run("readiness")).checks["x"]
    return result.status, result.output


async def test_sql_check_on_sqlite_sync_engine(tmp_path: object) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/h.db")
    assert (await _status(sql_check(engine)))[0] == "pass"
    engine.dispose()


@pytest.mark.postgres
async def test_sql_check_on_postgres_async_engine(postgres_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url.replace("+psycopg", "+asyncpg"))
    try:
        assert (await _status(sql_check(engine)))[0] == "pass"
    finally:
        await engine.dispose()


@pytest.mark.redis
async def test_redis_check_passes(redis_url: str) -> None:
    assert await _status(redis_check(redis_url)) == ("pass", None)


async def test_redis_check_fails_on_closed_port() -> None:
    status, output = await _status(redis_check("redis://127.0.0.1:1/0"))
    assert status == "fail"
    assert output


@pytest.mark.nats
async def test_nats_check_passes(nats_url: str) -> None:
    assert (await _status(nats_check(nats_url)))[0] == "pass"


@pytest.mark.rabbitmq
async def test_rabbitmq_check_passes(rabbitmq_url: str) -> None:
    assert (await _status(rabbitmq_check(rabbitmq_url)))[0] == "pass"
