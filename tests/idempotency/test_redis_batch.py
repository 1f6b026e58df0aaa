"""RedisStore on its own connection: a call made when nothing is in flight goes at once;
the calls made while one is in flight gather into one write per event-loop turn, one
script call per kind, each item still atomic and answered to its own caller; a lost
script is loaded again; a queued caller gone is not sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from safeship._redis_wire import Wire
from safeship._resp import Reader
from safeship.idempotency import IdempotencyStoreError, RedisStore, State, StoredResponse

RESPONSE = StoredResponse(201, ((b"content-type", b"application/json"),), b'{"id": 1}')


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def new_store(made: list[RedisStore]) -> Any:
    def make(client: redis.asyncio.Redis) -> RedisStore:
        store = RedisStore(client, prefix=f"test:idem:batch:{uuid.uuid4().hex}:")
        made.append(store)
        return store

    return make


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[list[list[bytes]]]:
    """The commands of each write the stores' connections are given, read back."""
    writes: list[list[list[bytes]]] = []
    submit = Wire.submit

    def counted(self: Wire, data: bytes, count: int) -> Any:
        commands = Reader().feed(data)  # a command is an array of bulk strings, as a reply
        assert len(commands) == count
        writes.append(commands)
        return submit(self, data, count)

    monkeypatch.setattr(Wire, "submit", counted)
    return writes


async def test_one_turns_calls_share_a_pipeline_and_each_gets_its_own_answer(
    client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch, new_store: Any
) -> None:
    store = new_store(client)
    made = _count_writes(monkeypatch)
    keys = [f"k{i}" for i in range(16)] + ["k0"]  # the last one meets k0's claim
    claims = await asyncio.gather(*(store.claim(k, "fp-" + k, lease=5, ttl=60) for k in keys))
    # k0's claim went at once (nothing was in flight); the other 16 queued behind it and
    # went in one write of one script call
    assert [[int(command[2]) for command in write] for write in made] == [[2], [32]]
    assert [c.token is not None for c in claims] == [True] * 16 + [False]
    assert claims[-1].existing is not None and claims[-1].existing.state is State.IN_FLIGHT
    done = await asyncio.gather(
        *(
            store.complete(k, c.token or "", RESPONSE, ttl=60)
            for k, c in zip(keys[:16], claims[:16], strict=True)
        )
    )
    assert done == [True] * 16
    assert [[int(command[2]) for command in write] for write in made[2:]] == [[2], [30]]
    record = await store.get("k7")
    assert record is not None and record.state is State.DONE and record.response == RESPONSE
    assert record.fingerprint == "fp-k7"


async def test_a_script_the_server_lost_is_loaded_again(
    client: redis.asyncio.Redis, new_store: Any
) -> None:
    store = new_store(client)
    # As after a restart or SCRIPT FLUSH (not done here: the server is shared): the sha
    # the store sends is unknown to the server.
    store._shas["claim"] = "0" * 40
    claims = await asyncio.gather(store.claim("a", "fp", lease=5, ttl=60), store.get("a"))
    assert claims[0].token is not None
    again = await store.claim("a", "fp", lease=5, ttl=60)
    assert again.token is None and again.existing is not None


async def test_a_caller_cancelled_before_its_turn_ends_sends_nothing(
    client: redis.asyncio.Redis, new_store: Any
) -> None:
    store = new_store(client)
    ahead = asyncio.ensure_future(store.get("ahead"))  # in flight: the next call queues
    task = asyncio.create_task(store.claim("gone", "fp", lease=5, ttl=60))
    await asyncio.sleep(0)  # the claim is queued for this turn's write, not yet sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ahead is None
    await asyncio.sleep(0.05)
    assert await store.get("gone") is None  # no key left in flight by a caller that left
    assert (await store.claim("gone", "fp", lease=5, ttl=60)).token is not None


async def test_a_dead_server_fails_every_call_of_the_batch_as_store_down(new_store: Any) -> None:
    dead = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    store = new_store(dead)
    answers = await asyncio.gather(
        *(store.claim(f"k{i}", "fp", lease=5, ttl=60) for i in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(a, IdempotencyStoreError) for a in answers), answers
    await dead.aclose()


async def test_one_turns_calls_of_a_kind_share_one_script_call(
    client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch, new_store: Any
) -> None:
    store = new_store(client)
    claimed = await store.claim("first", "fp", lease=5, ttl=60)
    assert claimed.token is not None
    writes = _count_writes(monkeypatch)
    answers: list[Any] = await asyncio.gather(
        *(store.claim(f"c{i}", "fp", lease=5, ttl=60) for i in range(8)),
        store.complete("first", claimed.token, RESPONSE, ttl=60),
        store.get("c0"),  # queued after c0's claim in the same turn: it sees the claim
    )
    # c0's claim went at once; the rest queued behind it: one write of three script calls
    assert len(writes) == 2 and [int(command[2]) for command in writes[0]] == [2]
    assert [command[0] for command in writes[1]] == [b"EVALSHA"] * 3
    calls = [int(command[2]) for command in writes[1]]  # each call's number of keys
    assert sorted(calls) == [2, 2, 14]  # 7 claims in one call; one complete; one get
    assert all(a.token is not None for a in answers[:8])
    assert answers[8] is True
    assert answers[9] is not None and answers[9].state is State.IN_FLIGHT
    record = await store.get("first")
    assert record is not None and record.state is State.DONE and record.response == RESPONSE


async def test_an_item_that_fails_fails_alone(client: redis.asyncio.Redis, new_store: Any) -> None:
    store = new_store(client)
    await client.lpush(store._keys("listed")[0], "not a record")  # the wrong type for GET
    answers = await asyncio.gather(
        store.claim("before", "fp", lease=5, ttl=60),
        store.claim("listed", "fp", lease=5, ttl=60),
        store.claim("after", "fp", lease=5, ttl=60),
        return_exceptions=True,
    )
    assert not isinstance(answers[0], BaseException) and answers[0].token is not None
    assert isinstance(answers[1], redis.exceptions.ResponseError), answers[1]
    assert "WRONGTYPE" in str(answers[1])
    assert not isinstance(answers[2], BaseException) and answers[2].token is not None
    await client.delete(store._keys("listed")[0])


async def test_without_batching_each_call_goes_alone_and_fails_alone(
    client: redis.asyncio.Redis, new_store: Any
) -> None:
    store = new_store(client)
    store._batching = False  # as with a Redis Cluster client
    claim = await store.claim("solo", "fp", lease=5, ttl=60)
    assert claim.token is not None
    assert await store.complete("solo", claim.token, RESPONSE, ttl=60)
    again = await store.claim("solo", "fp", lease=5, ttl=60)
    assert again.existing is not None and again.existing.response == RESPONSE
    await client.lpush(store._keys("listed")[0], "not a record")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await store.claim("listed", "fp", lease=5, ttl=60)
    await client.delete(store._keys("listed")[0])


@pytest.mark.parametrize("fingerprint", ["ab" * 32, "", "a-b", 'say "hi"', "\\", "é", "x\ny"])
def test_a_claims_record_is_the_json_of_the_record_however_the_fingerprint_looks(
    fingerprint: str,
) -> None:
    from safeship.idempotency._store import _in_flight_json, _record_json, new_token

    token = new_token()
    record = _in_flight_json(fingerprint, token)
    assert record == _record_json(State.IN_FLIGHT, fingerprint, token, None)
    assert json.loads(record) == {"st": "in_flight", "fp": fingerprint, "t": token, "r": None}
