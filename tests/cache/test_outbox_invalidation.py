"""Invalidation for another service through the outbox, end to end on PostgreSQL: the
writer stages the invalidation in its transaction, the real relay delivers it (its
in-process sink standing in for the broker), the consumer's cache drops the tag; a rolled
back write delivers nothing."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from safeship.cache import (
    INVALIDATION_TYPE,
    Cache,
    aapply_invalidation,
    apply_invalidation,
    stage_invalidation,
)
from safeship.db import create_engine, upgrade
from safeship.outbox import CallbackSink, Relay, RelayConfig

pytestmark = pytest.mark.postgres


async def test_a_committed_write_invalidates_the_consumer_cache(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    upgrade(engine)
    consumer = Cache("catalog-view", ttl=600)  # the other service's cache
    consumer.set("product:1", "old", tags=["product:1"])
    consumer.set("product:2", "kept", tags=["product:2"])
    seen: list[str] = []
    applied = asyncio.Event()

    async def handle(event: object) -> None:
        seen.append(getattr(event, "type", ""))
        await aapply_invalidation([consumer], event)
        applied.set()

    relay = Relay(engine, CallbackSink(handle), config=RelayConfig(poll_interval=0.05))
    task = asyncio.create_task(relay.run())
    try:
        with engine.connect() as conn:  # rolled back: nothing is published
            conn.begin()
            stage_invalidation(conn, namespace="catalog-view", tags=["product:2"])
            conn.rollback()
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))  # the write the invalidation goes with
            stage_invalidation(conn, namespace="catalog-view", tags=["product:1"])
        await asyncio.wait_for(applied.wait(), 20)
        assert seen == [INVALIDATION_TYPE]
        assert consumer.get("product:1") is None
        assert consumer.get("product:2") == "kept"
    finally:
        relay.stop()
        await task
        consumer.close()
        engine.dispose()


def test_a_message_body_applies_and_other_events_are_ignored() -> None:
    cache = Cache("catalog-body", ttl=600)
    other = Cache("elsewhere", ttl=600)
    cache.set("a", 1, tags=["t"])
    other.set("a", 1, tags=["t"])
    body = {"type": INVALIDATION_TYPE, "payload": {"namespace": "catalog-body", "tags": ["t"]}}
    assert apply_invalidation([cache, other], body) is True
    assert cache.get("a") is None and other.get("a") == 1  # only the named namespace
    assert apply_invalidation(cache, {"type": "order.created", "payload": {}}) is False
    with pytest.raises(ValueError, match="namespace"):
        apply_invalidation(cache, {"type": INVALIDATION_TYPE, "payload": {"tags": "t"}})
    with pytest.raises(ValueError, match="tags"):
        stage_invalidation(None, namespace="catalog-body", tags=[])
