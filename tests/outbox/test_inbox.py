"""inbox.seen() (sync) and inbox.aseen() (async): each refuses the other kind of connection,
so a forgotten await cannot read as "already handled" and drop a message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.outbox import OutboxConnectionError, inbox


def _recorded(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_inbox")).scalar_one())


def test_aseen_given_a_sync_connection_says_use_seen(sqlite_engine: sa.Engine) -> None:
    async def misuse(conn: Any) -> None:
        with pytest.raises(OutboxConnectionError, match=r"use `seen\(conn"):
            await inbox.aseen(conn, consumer="billing", message_id="m1")

    with sqlite_engine.begin() as conn:
        asyncio.run(misuse(conn))
    assert _recorded(sqlite_engine) == 0


@pytest.mark.postgres
async def test_seen_given_an_async_connection_raises_and_aseen_records(
    pg_url: str, pg_engine: sa.Engine
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(pg_url.replace("+psycopg", "+asyncpg"))
    try:
        async with engine.begin() as conn:
            with pytest.raises(OutboxConnectionError, match=r"use `await aseen\(conn"):
                inbox.seen(conn, consumer="billing", message_id="m1")  # type: ignore[arg-type]
            assert await inbox.aseen(conn, consumer="billing", message_id="m1") is False
            assert await inbox.aseen(conn, consumer="billing", message_id="m1") is True
        async with AsyncSession(engine) as session, session.begin():
            assert await inbox.aseen(session, consumer="audit", message_id="m1") is False
    finally:
        await engine.dispose()
    assert _recorded(pg_engine) == 2
