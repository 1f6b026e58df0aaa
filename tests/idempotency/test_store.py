"""The store contract, on real Redis, PostgreSQL and SQLite: every change names its token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from safeship.idempotency import State, Store, StoredResponse
from tests.idempotency.conftest import STORES, open_store


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The contract holds on an asyncpg AsyncEngine too."""
    async with open_store(request.param, request, tmp_path) as opened:
        yield opened


RESPONSE = StoredResponse(201, ((b"content-type", b"application/json"),), b'{"id": 7}')


async def test_a_free_key_is_claimed_and_a_second_claim_sees_it_in_flight(store: Store) -> None:
    first = await store.claim("k", "fp", lease=5, ttl=60)
    second = await store.claim("k", "fp", lease=5, ttl=60)
    assert first.claimed and not second.claimed
    assert second.existing is not None
    assert second.existing.state is State.IN_FLIGHT
    assert second.existing.retry_after is not None and 0 < second.existing.retry_after <= 5


async def test_a_completed_key_holds_its_whole_response(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60)
    assert claim.token is not None
    assert await store.complete("k", claim.token, RESPONSE, ttl=60)
    record = await store.get("k")
    assert record is not None and record.state is State.DONE
    assert record.response == RESPONSE and record.fingerprint == "fp"


async def test_a_stale_token_changes_nothing(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60)
    assert claim.token is not None
    assert not await store.complete("k", "0" * 32, RESPONSE, ttl=60)
    assert not await store.release("k", "0" * 32)
    assert not await store.renew("k", "0" * 32, lease=5)
    record = await store.get("k")
    assert record is not None and record.state is State.IN_FLIGHT


async def test_a_lease_not_renewed_turns_into_an_unknown_outcome(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=0.2, ttl=60)
    assert claim.token is not None
    await asyncio.sleep(0.4)
    record = await store.get("k")
    assert record is not None and record.state is State.UNKNOWN
    assert not await store.complete("k", "0" * 32, RESPONSE, ttl=60)


async def test_a_renewed_lease_keeps_the_key_in_flight(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=0.5, ttl=60)
    assert claim.token is not None
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await store.renew("k", claim.token, lease=0.5)
    record = await store.get("k")
    assert record is not None and record.state is State.IN_FLIGHT


async def test_an_unknown_key_is_taken_over_by_one_caller_only(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60)
    assert claim.token is not None
    assert await store.mark_unknown("k", claim.token)
    tokens = await asyncio.gather(*(store.take_over("k", lease=5) for _ in range(5)))
    winners = [t for t in tokens if t is not None]
    assert len(winners) == 1
    assert await store.complete("k", winners[0], RESPONSE, ttl=60)
    assert await store.take_over("k", lease=5) is None


async def test_a_released_key_can_be_claimed_again(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60)
    assert claim.token is not None
    assert await store.release("k", claim.token)
    assert await store.get("k") is None
    assert (await store.claim("k", "other", lease=5, ttl=60)).claimed


async def test_an_expired_key_is_free_again_by_the_stores_clock(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=0.1, ttl=0.3)
    assert claim.token is not None
    assert await store.complete("k", claim.token, RESPONSE, ttl=0.3)
    await asyncio.sleep(0.5)
    assert await store.get("k") is None
    assert (await store.claim("k", "fp2", lease=5, ttl=60)).claimed


async def test_concurrent_claims_of_one_key_have_one_winner(store: Store) -> None:
    claims = await asyncio.gather(*(store.claim("race", "fp", lease=5, ttl=60) for _ in range(30)))
    assert sum(c.claimed for c in claims) == 1


async def test_bad_durations_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="lease"):
        await store.claim("k", "fp", lease=0, ttl=60)


async def test_prune_deletes_expired_sql_keys_only(store: Store) -> None:
    from safeship.idempotency import SqlStore

    if not isinstance(store, SqlStore):
        pytest.skip("Redis expires keys itself")
    await store.claim("old", "fp", lease=0.1, ttl=0.1, unknown_ttl=0.1)
    await store.claim("live", "fp", lease=5, ttl=60)
    await asyncio.sleep(0.3)
    assert await store.prune() == 1
    assert await store.get("live") is not None


async def _released(store: Store, key: str, within: float = 10.0) -> float:
    """Poll the store's own state until ``key`` is free; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await store.get(key) is not None:
        assert loop.time() - start < within, f"{key} was never released"
        await asyncio.sleep(0.02)
    return loop.time() - start


async def test_an_unknown_outcome_holds_its_key_for_unknown_ttl_only(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60, unknown_ttl=0.4)
    assert claim.token is not None
    assert await store.mark_unknown("k", claim.token, unknown_ttl=0.4)
    record = await store.get("k")
    assert record is not None and record.state is State.UNKNOWN  # held at first, not free
    waited = await _released(store, "k")
    assert waited < 5  # released after unknown_ttl, long before the 60 s ttl
    assert (await store.claim("k", "fp", lease=5, ttl=60)).claimed


async def test_a_dead_claim_says_unknown_then_is_released(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=0.2, ttl=60, unknown_ttl=0.4)
    assert claim.token is not None
    seen = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (record := await store.get("k")) is not None:
        seen.add(record.state)
        assert loop.time() - start < 10, "a dead claim was never released"
        await asyncio.sleep(0.02)
    assert State.UNKNOWN in seen  # a retry was told "unknown" before the key went free
    assert (await store.claim("k", "fp", lease=5, ttl=60)).claimed  # the next request runs
    assert not await store.complete("k", claim.token, RESPONSE, ttl=60)  # the dead one lost it


async def test_renewing_keeps_a_claim_past_its_unknown_ttl(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=0.3, ttl=60, unknown_ttl=0.1)
    assert claim.token is not None
    for _ in range(6):  # 1.2 s: three times lease + unknown_ttl
        await asyncio.sleep(0.2)
        assert await store.renew("k", claim.token, lease=0.3, unknown_ttl=0.1)
    record = await store.get("k")
    assert record is not None and record.state is State.IN_FLIGHT


async def test_a_finished_key_keeps_its_ttl_not_the_unknown_ttl(store: Store) -> None:
    claim = await store.claim("k", "fp", lease=5, ttl=60, unknown_ttl=0.1)
    assert claim.token is not None
    assert await store.complete("k", claim.token, RESPONSE, ttl=60)
    await asyncio.sleep(0.3)
    record = await store.get("k")
    assert record is not None and record.state is State.DONE


async def test_a_dead_database_on_asyncpg_is_store_down_not_a_crash() -> None:
    from safeship.db._engine import create_async_engine
    from safeship.idempotency import IdempotencyStoreError, SqlStore

    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    store = SqlStore(engine)
    with pytest.raises(IdempotencyStoreError, match="did not answer"):
        await store.claim("k", "fp", lease=5, ttl=60)
    with pytest.raises(IdempotencyStoreError):
        await store.complete("k", "t", StoredResponse(201), ttl=60)
    await engine.dispose()


async def test_a_database_refusing_the_connection_on_asyncpg_is_store_down() -> None:
    # As "too many clients already" (not provoked here: the server is shared), the
    # server answers but refuses the connection: the request fails closed, 503, not 500.
    from safeship.db._engine import create_async_engine
    from safeship.idempotency import IdempotencyStoreError, SqlStore

    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/safeship_absent_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(url)
    with pytest.raises(IdempotencyStoreError, match="did not answer"):
        await SqlStore(engine).claim("k", "fp", lease=5, ttl=60)
    await engine.dispose()
