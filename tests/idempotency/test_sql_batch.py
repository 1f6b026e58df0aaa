"""SqlStore on asyncpg sends the claims (and the completes) of one event-loop turn in one
statement and one commit; each caller still gets its own key's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from safeship.db._engine import create_async_engine
from safeship.idempotency import SqlStore, State, StoredResponse

from .conftest import sql_engine

RESPONSE = StoredResponse(201, ((b"content-type", b"application/json"),), b'{"id": 1}')


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlStore]:
    sql_engine(postgres_url).dispose()
    engine = create_async_engine(postgres_url)
    yield SqlStore(engine)
    await engine.dispose()


def _count(store: SqlStore, monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    sizes: list[int] = []
    turn = store._claims if name == "claim" else store._completes
    many = turn._many

    async def counted(conn: Any, items: list[tuple[Any, ...]]) -> list[Any]:
        sizes.append(len(items))
        return await many(conn, items)

    monkeypatch.setattr(turn, "_many", counted)
    return sizes


async def test_one_turns_claims_and_completes_share_a_statement(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed, completed = _count(store, monkeypatch, "claim"), _count(store, monkeypatch, "done")
    keys = [f"batch-{i}" for i in range(16)]
    await store.claim("batch-held", "fp-held", lease=5, ttl=60)
    claims = await asyncio.gather(
        *(store.claim(k, "fp-" + k, lease=5, ttl=60) for k in [*keys, "batch-held"])
    )
    assert claimed == [17]
    assert [c.token is not None for c in claims] == [True] * 16 + [False]
    held = claims[-1].existing
    assert held is not None and held.state is State.IN_FLIGHT and held.fingerprint == "fp-held"
    done = await asyncio.gather(
        *(
            store.complete(k, c.token or "", RESPONSE, ttl=60)
            for k, c in zip(keys, claims[:16], strict=True)
        ),
        store.complete("batch-held", "not-its-token", RESPONSE, ttl=60),
    )
    assert completed == [17] and done == [True] * 16 + [False]
    record = await store.get("batch-7")
    assert record is not None and record.state is State.DONE and record.response == RESPONSE
    again = await store.claim("batch-7", "fp-batch-7", lease=5, ttl=60)
    assert again.token is None and again.existing is not None
    assert again.existing.response == RESPONSE


async def test_one_key_twice_in_a_turn_has_one_owner(store: SqlStore) -> None:
    claims = await asyncio.gather(
        *(store.claim("twice", f"fp{i}", lease=5, ttl=60) for i in range(4))
    )
    owners = [c for c in claims if c.token is not None]
    assert len(owners) == 1
    for other in claims:
        if other.token is None:
            assert other.existing is not None and other.existing.state is State.IN_FLIGHT


async def test_a_value_the_database_refuses_fails_only_its_caller(store: SqlStore) -> None:
    too_long = "x" * 65  # the key column holds 64 characters
    results = await asyncio.gather(
        store.claim("fine-1", "fp", lease=5, ttl=60),
        store.claim(too_long, "fp", lease=5, ttl=60),
        store.claim("fine-2", "fp", lease=5, ttl=60),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException) and results[0].token is not None
    assert isinstance(results[1], Exception)
    assert not isinstance(results[2], BaseException) and results[2].token is not None


async def test_a_cancelled_caller_is_not_sent(store: SqlStore) -> None:
    task = asyncio.ensure_future(store.claim("cancelled", "fp", lease=5, ttl=60))
    kept = asyncio.ensure_future(store.claim("kept", "fp", lease=5, ttl=60))
    await asyncio.sleep(0)  # both queued for this turn's statement
    task.cancel()
    assert (await kept).token is not None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.get("cancelled") is None
