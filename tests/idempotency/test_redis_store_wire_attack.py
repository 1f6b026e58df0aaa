"""RedisStore on its own pipelined Redis connection, attacked from outside.

Every test runs against the real Redis (db 9, a fresh key prefix per store): a cut or a
frozen link under a batch, cancelled callers, two event loops and a forked child sharing
one store, ``aclose()`` under load, huge replies, hostile keys, the database and the
credentials of the URL, and the redis-py fallback path.  Each test that found a bug
(since fixed) asserts what the store should do; a setup that went wrong raises
:class:`Precondition` and fails, so a test never passes on a case it did not set up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import socket
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from safeship.idempotency import IdempotencyStoreError, RedisStore, State, StoredResponse
from safeship.idempotency._model import Claim, Record
from tests.support.freeze_proxy import FreezeProxy

URL = "redis://127.0.0.1:6379/9"
RESPONSE = StoredResponse(201, ((b"content-type", b"text/plain"),), b"made")

pytestmark = pytest.mark.redis


class Precondition(Exception):  # noqa: N818 -- the setup of a test went wrong, not its claim
    """Raised when a test could not set up the case it asserts on (its setup failed, not
    the store), so the failure says which it was."""


# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[redis.asyncio.Redis]:
    """redis-py on db 9: reads what the store wrote, plants hostile values."""
    client = redis.asyncio.Redis.from_url(URL)
    yield client
    await client.aclose()


@pytest.fixture
def proxy() -> Iterator[FreezeProxy]:
    """A proxy in front of the real Redis that can freeze (hold bytes) and cut (drop)."""
    proxy = FreezeProxy("127.0.0.1", 6379)
    yield proxy
    proxy.thaw()
    proxy.close()


def new_store(made: list[RedisStore], client: redis.asyncio.Redis, prefix: str = "") -> RedisStore:
    store = RedisStore(client, prefix=prefix or f"test:idem:attack:{uuid.uuid4().hex}:")
    made.append(store)
    return store


def _batch(store: RedisStore) -> Any:
    """The running event loop's side of the store: its queued calls and writes in flight."""
    assert store._batches is not None
    return store._batches.get()


def record_name(store: RedisStore, key: str) -> str:
    return f"{store._prefix}{{{key}}}"


async def turns(count: int = 3) -> None:
    """Let the loop run ``count`` turns (a turn's batch is written at its end)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def stored(raw: redis.asyncio.Redis, store: RedisStore, key: str) -> dict[str, Any] | None:
    """The record of ``key`` as Redis holds it (None when absent)."""
    value = await raw.get(record_name(store, key))
    return None if value is None else dict(json.loads(value))


async def drop_prefix(raw: redis.asyncio.Redis, store: RedisStore) -> None:
    names = [name async for name in raw.scan_iter(match=store._prefix + "*", count=1000)]
    for at in range(0, len(names), 1000):
        await raw.delete(*names[at : at + 1000])


# -- the connection cut under a batch, then restored ----------------------------------


async def test_a_cut_under_a_written_batch_fails_every_waiter_then_reconnects(
    made: list[RedisStore], raw: redis.asyncio.Redis, proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9")
    try:
        store = new_store(made, client)
        assert await asyncio.wait_for(store.get("warm"), 5) is None  # connected
        proxy.freeze()  # the batch below is written but never reaches the server
        tasks: list[asyncio.Future[Any]] = []
        for i in range(300):
            tasks.append(asyncio.ensure_future(store.claim(f"c{i}", "fp", lease=5, ttl=60)))
            tasks.append(asyncio.ensure_future(store.get(f"c{i}")))
            tasks.append(asyncio.ensure_future(store.renew(f"c{i}", "tok", lease=5)))
        await turns()
        assert _batch(store).sending, "the batch was written and waits for its replies"
        assert not any(task.done() for task in tasks)
        proxy.cut()
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        wrong = [g for g in got if not isinstance(g, IdempotencyStoreError)]
        assert wrong == []  # every waiter learns "store down"; none got an answer
        # while the proxy refuses, a call fails at once too (no hang on the reconnect)
        with pytest.raises(IdempotencyStoreError):
            await asyncio.wait_for(store.claim("during-the-cut", "fp", lease=5, ttl=60), 5)
        proxy.thaw()
        proxy.restore()
        again = await asyncio.wait_for(store.claim("after-the-cut", "fp-after", lease=5, ttl=60), 5)
        assert again.token is not None  # the next call connected again
        held = await stored(raw, store, "after-the-cut")
        assert held is not None and held["t"] == again.token and held["fp"] == "fp-after"
    finally:
        await client.aclose()


async def test_a_cut_while_a_large_reply_streams_in_answers_right_or_fails_cleanly(
    made: list[RedisStore], raw: redis.asyncio.Redis, proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9")
    direct = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        writer = new_store(made, direct, prefix=store._prefix)
        keys = [f"r{i}" for i in range(300)]
        bodies = {k: (k.encode() * 4000)[:20000] for k in keys}
        claims = await asyncio.gather(*(writer.claim(k, "fp-" + k, lease=5, ttl=60) for k in keys))
        await asyncio.gather(
            *(
                writer.complete(k, c.token or "", StoredResponse(200, (), bodies[k]), ttl=60)
                for k, c in zip(keys, claims, strict=True)
            )
        )
        assert await asyncio.wait_for(store.get("warm"), 5) is None
        tasks = [asyncio.ensure_future(store.get(k)) for k in keys]
        await turns()
        await asyncio.sleep(0.005)  # some of the ~8 MB reply may be in: cut it anyway
        proxy.cut()
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        for key, answer in zip(keys, got, strict=True):
            if isinstance(answer, BaseException):
                assert isinstance(answer, IdempotencyStoreError), answer
            else:  # answered: then with its own record, never another key's
                assert isinstance(answer, Record) and answer.fingerprint == "fp-" + key
                assert answer.response is not None and answer.response.body == bodies[key]
        proxy.restore()
        record = await asyncio.wait_for(store.get(keys[7]), 5)
        assert record is not None and record.response is not None
        assert record.response.body == bodies[keys[7]]
    finally:
        await drop_prefix(raw, made[-1])
        await client.aclose()
        await direct.aclose()


# -- a frozen server ------------------------------------------------------------------


async def test_a_frozen_server_fails_callers_within_the_socket_timeout_then_thaws(
    made: list[RedisStore], raw: redis.asyncio.Redis, proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9", socket_timeout=0.5)
    try:
        store = new_store(made, client)
        assert await asyncio.wait_for(store.get("warm"), 5) is None
        proxy.freeze()
        started = time.monotonic()
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(store.claim(f"f{i}", "fp", lease=5, ttl=60)) for i in range(50)
        ]
        tasks += [asyncio.ensure_future(store.get(f"f{i}")) for i in range(50)]
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        elapsed = time.monotonic() - started
        assert all(isinstance(g, IdempotencyStoreError) for g in got), got[:3]
        assert 0.4 <= elapsed < 2.0, elapsed
        # still frozen: the next call must connect again; the handshake is bounded too
        started = time.monotonic()
        with pytest.raises(IdempotencyStoreError):
            await asyncio.wait_for(store.claim("frozen-connect", "fp", lease=5, ttl=60), 5)
        assert time.monotonic() - started < 2.0
        proxy.thaw()
        after = await asyncio.wait_for(store.claim("thawed", "fp-thawed", lease=5, ttl=60), 5)
        assert after.token is not None
        held = await stored(raw, store, "thawed")
        assert held is not None and held["t"] == after.token
    finally:
        await client.aclose()


async def test_a_from_url_client_keeps_redis_pys_default_timeout(made: list[RedisStore]) -> None:
    # Not the FreezeProxy: its upstream socket has a 5 s timeout of its own, so it drops
    # a connection idle for 5 s and would answer this test for the store.
    silent = socket.socket()  # the kernel completes the TCP handshake; nobody answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    try:
        own = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        if own.socket_timeout != 5:
            raise Precondition("redis-py's own connections are bounded by 5 s")
        store = new_store(made, client)
        task = asyncio.ensure_future(store.claim("k", "fp", lease=5, ttl=60))
        done, _ = await asyncio.wait({task}, timeout=6.5)
        await asyncio.wait_for(store.aclose(), 3)  # ends the wait, if it still waits
        await asyncio.wait({task}, timeout=3)
        error = task.exception() if task.done() else None
        assert task in done, "still waiting after redis-py's 5 s socket_timeout"
        assert isinstance(error, IdempotencyStoreError), error
    finally:
        await client.aclose()
        silent.close()


# -- cancelled callers ----------------------------------------------------------------


async def test_callers_cancelled_after_the_write_never_hand_their_reply_to_another(
    made: list[RedisStore], raw: redis.asyncio.Redis, proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9")
    try:
        store = new_store(made, client)
        assert await asyncio.wait_for(store.get("warm"), 5) is None
        proxy.freeze()
        claims = {
            i: asyncio.ensure_future(store.claim(f"k{i}", f"fp{i}", lease=5, ttl=60))
            for i in range(200)
        }
        reads = {i: asyncio.ensure_future(store.get(f"other{i}")) for i in range(0, 200, 3)}
        await turns()
        assert _batch(store).sending, "the batch is on the wire"
        for i in range(1, 200, 2):
            claims[i].cancel()
        proxy.thaw()
        await asyncio.wait_for(
            asyncio.gather(*claims.values(), *reads.values(), return_exceptions=True), 5
        )
        tokens = set()
        for i, task in claims.items():
            held = await stored(raw, store, f"k{i}")
            if i % 2:
                assert task.cancelled()
                # its claim may have run; if so it is its own (fingerprint fp{i})
                assert held is None or held["fp"] == f"fp{i}"
                continue
            claim = task.result()
            assert isinstance(claim, Claim) and claim.token is not None
            assert held is not None and held["t"] == claim.token and held["fp"] == f"fp{i}"
            tokens.add(claim.token)
        assert len(tokens) == 100
        assert all(task.result() is None for task in reads.values())
        # the same connection goes on answering in order
        again = await asyncio.wait_for(store.claim("k0", "fp0", lease=5, ttl=60), 5)
        assert again.token is None and again.existing is not None
        assert again.existing.fingerprint == "fp0"
    finally:
        await client.aclose()


# -- event loops: two at once, and one after another ----------------------------------


def test_two_event_loops_in_two_threads_each_get_their_answer_promptly() -> None:
    client = redis.asyncio.Redis.from_url(URL)
    store = RedisStore(client, prefix=f"test:idem:attack:{uuid.uuid4().hex}:")
    a_queued, b_queued = threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    async def loop_a() -> None:
        try:
            tasks = [
                asyncio.ensure_future(store.claim(k, "fp-" + k, lease=5, ttl=60))
                for k in ("a1", "a2")
            ]
            await asyncio.sleep(0)  # both calls made: at least the second waits for the turn
            out["a_pending"] = len(_batch(store).pending)
            a_queued.set()
            b_queued.wait(5)  # this turn goes on (a busy loop) while B makes its call
            time.sleep(0.2)  # noqa: ASYNC251 -- on, blocking, until loop B sleeps in its selector
            out["a"] = await asyncio.wait_for(asyncio.gather(*tasks), 3)
        finally:
            await store.aclose()

    async def loop_b() -> None:
        try:
            if not a_queued.wait(5):
                return
            before = len(_batch(store).pending)
            started = time.monotonic()
            task = asyncio.ensure_future(store.claim("b", "fp-b", lease=5, ttl=60))
            await asyncio.sleep(0)  # B's claim is made now
            out["b_joined"] = len(_batch(store).pending) != before  # its own loop's side
            b_queued.set()
            try:
                out["b"] = await asyncio.wait_for(task, 2)
            except BaseException as exc:  # noqa: BLE001 -- asserted on below
                out["b"] = exc
            out["b_seconds"] = time.monotonic() - started
        finally:
            await store.aclose()

    threads = [
        threading.Thread(target=asyncio.run, args=(f(),), daemon=True) for f in (loop_a, loop_b)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    asyncio.run(client.aclose())
    if any(thread.is_alive() for thread in threads) or not out.get("a_pending"):
        raise Precondition(f"the two loops did not meet in one turn: {out}")
    assert out["b_joined"] is False  # each loop gathers its own calls, on its own connection
    assert all(isinstance(c, Claim) and c.token is not None for c in out["a"])
    assert isinstance(out["b"], Claim) and out["b"].token is not None, out["b"]
    assert out["b_seconds"] < 1.0, out["b_seconds"]


def _run_twice(store: RedisStore, client: redis.asyncio.Redis) -> tuple[Any, ...]:
    """asyncio.run() twice with one store, the first loop ending without aclose()."""

    async def first() -> str | None:
        return (await asyncio.wait_for(store.claim("k", "fp-k", lease=5, ttl=60), 5)).token

    async def second(token: str) -> tuple[Record | None, bool, Record | None]:
        try:
            held = await asyncio.wait_for(store.get("k"), 5)
            done = await asyncio.wait_for(store.complete("k", token, RESPONSE, ttl=60), 5)
            return held, done, await asyncio.wait_for(store.get("k"), 5)
        finally:
            await store.aclose()
            await client.delete(record_name(store, "k"), record_name(store, "k") + ":lease")
            await client.aclose()

    token = asyncio.run(first())  # no aclose(): the loop ends with its connection open
    assert token is not None
    return asyncio.run(second(token))


def _unclosed_transports() -> list[str]:
    """The "unclosed transport" warnings of the garbage collected now."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if "unclosed transport" in str(w.message)]


def test_asyncio_run_twice_with_one_store_connects_again_on_the_new_loop() -> None:
    _unclosed_transports()  # what earlier tests left behind is not this test's
    client = redis.asyncio.Redis.from_url(URL)
    store = RedisStore(client, prefix=f"test:idem:attack:{uuid.uuid4().hex}:")
    try:
        held, done, after = _run_twice(store, client)
    finally:
        _unclosed_transports()  # the first loop's connection (see the test below)
    assert held is not None and held.state is State.IN_FLIGHT and held.fingerprint == "fp-k"
    assert done is True
    assert after is not None and after.state is State.DONE and after.response == RESPONSE


def test_a_dead_loops_connection_is_closed_not_left_to_the_garbage_collector() -> None:
    _unclosed_transports()
    client = redis.asyncio.Redis.from_url(URL)
    store = RedisStore(client, prefix=f"test:idem:attack:{uuid.uuid4().hex}:")
    held, done, _ = _run_twice(store, client)
    if held is None or not done:
        raise Precondition("the two runs did not work")
    assert _unclosed_transports() == []


# -- a forked child -------------------------------------------------------------------


def _child_uses_store(store: RedisStore, results: Any, seconds: float = 3) -> None:
    async def go() -> tuple[Any, ...]:
        claim = await asyncio.wait_for(store.claim("child", "fp-child", lease=5, ttl=60), seconds)
        parents = await asyncio.wait_for(store.get("parent"), seconds)
        done = await asyncio.wait_for(
            store.complete("child", claim.token or "", RESPONSE, ttl=60), seconds
        )
        mine = await asyncio.wait_for(store.get("child"), seconds)
        await store.aclose()
        return (
            claim.token,
            parents.fingerprint if parents else None,
            done,
            mine.response == RESPONSE if mine else None,
        )

    try:
        results.put(("ok", asyncio.run(go())))
    except BaseException as exc:  # noqa: BLE001 -- sent to the parent to assert on
        results.put(("error", repr(exc)))


async def test_a_forked_child_uses_its_own_connection_and_gets_its_own_answers(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        parent = await asyncio.wait_for(store.claim("parent", "fp-parent", lease=5, ttl=60), 5)
        assert parent.token is not None  # the parent's connection is open at the fork
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child_uses_store, args=(store, results))
        child.start()
        loop = asyncio.get_running_loop()
        # the parent goes on using its connection while the child uses its own
        mine = await asyncio.gather(
            *(store.claim(f"p{i}", f"fp{i}", lease=5, ttl=60) for i in range(100))
        )
        await loop.run_in_executor(None, child.join, 10)
        assert child.exitcode == 0
        status, answer = results.get(timeout=1)
        assert status == "ok", answer
        token, parents_fingerprint, done, replayed = answer
        assert token is not None and parents_fingerprint == "fp-parent"
        assert done is True and replayed is True
        held = await stored(raw, store, "child")
        assert held is not None and held["st"] == "done"
        # the parent's answers were its own, and its connection still answers in order
        for i, claim in enumerate(mine):
            got = await stored(raw, store, f"p{i}")
            assert got is not None and got["t"] == claim.token and got["fp"] == f"fp{i}"
        record = await asyncio.wait_for(store.get("parent"), 5)
        assert record is not None and record.fingerprint == "fp-parent"
    finally:
        await client.aclose()


async def test_a_child_forked_while_a_call_is_queued_is_not_stuck(
    made: list[RedisStore],
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        assert (
            await asyncio.wait_for(store.claim("parent", "fp-parent", lease=5, ttl=60), 5)
        ).token
        queued = [
            asyncio.ensure_future(store.claim(k, "fp", lease=5, ttl=60)) for k in ("q1", "q2")
        ]
        await asyncio.sleep(0)  # a claim waits for the end of this turn
        if not _batch(store).pending:
            raise Precondition("no call queued in this turn")
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child_uses_store, args=(store, results, 1.5))
        child.start()  # forked inside the turn
        assert all(c.token for c in await asyncio.wait_for(asyncio.gather(*queued), 5))
        await asyncio.get_running_loop().run_in_executor(None, child.join, 10)
        status, answer = results.get(timeout=1)
        assert status == "ok", answer
    finally:
        await client.aclose()


# -- aclose() under load --------------------------------------------------------------


async def test_aclose_with_calls_in_flight_fails_them_and_the_next_call_reconnects(
    made: list[RedisStore], raw: redis.asyncio.Redis, proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9")
    try:
        store = new_store(made, client)
        assert await asyncio.wait_for(store.get("warm"), 5) is None
        proxy.freeze()
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(store.claim(f"k{i}", "fp", lease=5, ttl=60)) for i in range(100)
        ]
        tasks += [asyncio.ensure_future(store.release(f"k{i}", "tok")) for i in range(100)]
        await turns()
        assert _batch(store).sending
        await asyncio.wait_for(store.aclose(), 3)
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3)
        assert all(isinstance(g, IdempotencyStoreError) for g in got), got[:3]
        proxy.thaw()
        after = await asyncio.wait_for(store.claim("after-close", "fp-a", lease=5, ttl=60), 5)
        assert after.token is not None
        held = await stored(raw, store, "after-close")
        assert held is not None and held["t"] == after.token
        await store.aclose()
        await store.aclose()  # twice: harmless
        assert await asyncio.wait_for(store.get("after-close"), 5) is not None
    finally:
        await client.aclose()


async def test_aclose_while_connecting_fails_the_waiting_callers_at_once(
    made: list[RedisStore], proxy: FreezeProxy
) -> None:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/9", socket_timeout=None)
    try:
        store = new_store(made, client)
        proxy.freeze()  # TCP connects; the SELECT of the handshake is never answered
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(store.claim(f"k{i}", "fp", lease=5, ttl=60)) for i in range(10)
        ]
        tasks.append(asyncio.ensure_future(store.get("k0")))
        await asyncio.sleep(0.05)  # the connect is under way (no timeout: only aclose ends it)
        assert not any(task.done() for task in tasks)
        await asyncio.wait_for(store.aclose(), 3)
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3)
        assert all(isinstance(g, IdempotencyStoreError) for g in got), got
        proxy.thaw()
        assert (await asyncio.wait_for(store.claim("later", "fp", lease=5, ttl=60), 5)).token
    finally:
        await client.aclose()


async def test_calls_in_the_turn_of_aclose_answer_right_or_fail_cleanly(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        assert await store.get("warm") is None
        tasks = [
            asyncio.ensure_future(store.claim(f"k{i}", f"fp{i}", lease=5, ttl=60))
            for i in range(50)
        ]
        await turns(1)
        await asyncio.wait_for(store.aclose(), 3)
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        for i, answer in enumerate(got):
            if isinstance(answer, BaseException):
                assert isinstance(answer, IdempotencyStoreError), answer
                continue
            assert isinstance(answer, Claim) and answer.token is not None
            held = await stored(raw, store, f"k{i}")
            assert held is not None and held["t"] == answer.token
    finally:
        await client.aclose()


# -- big replies, many keys, hostile keys ---------------------------------------------


async def test_eight_megabyte_responses_round_trip_in_one_turn(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL, socket_timeout=5)
    try:
        store = new_store(made, client)
        bodies = {
            k: bytes(range(256)) * (8 * 1024 * 1024 // 256) + k.encode() for k in ("big1", "big2")
        }
        claims = await asyncio.gather(*(store.claim(k, "fp-" + k, lease=5, ttl=60) for k in bodies))
        done = await asyncio.wait_for(
            asyncio.gather(
                *(
                    store.complete(
                        k, c.token or "", StoredResponse(200, ((b"x-k", k.encode()),), b), ttl=60
                    )
                    for (k, b), c in zip(bodies.items(), claims, strict=True)
                ),
                store.get("small"),
            ),
            10,
        )
        assert done == [True, True, None]
        records = await asyncio.wait_for(asyncio.gather(store.get("big2"), store.get("big1")), 10)
        for key, record in zip(("big2", "big1"), records, strict=True):
            assert record is not None and record.state is State.DONE and record.response is not None
            assert record.response.body == bodies[key] and record.response.headers == (
                (b"x-k", key.encode()),
            )
        again = await asyncio.wait_for(store.claim("big1", "fp-big1", lease=5, ttl=60), 10)
        assert again.existing is not None and again.existing.response is not None
        assert again.existing.response.body == bodies["big1"]
    finally:
        await drop_prefix(raw, made[-1])
        await client.aclose()


async def test_twenty_thousand_mixed_calls_in_one_turn_each_answered_for_its_key(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        keys = [f"m{i}" for i in range(10000)]
        claims = await asyncio.wait_for(
            asyncio.gather(*(store.claim(k, "fp-" + k, lease=5, ttl=60) for k in keys)), 15
        )
        assert all(c.token is not None for c in claims)
        # one turn: 10,000 reads and 10,000 renewals (every third with a wrong token)
        got = await asyncio.wait_for(
            asyncio.gather(
                *(store.get(k) for k in keys),
                *(
                    store.renew(k, (c.token or "") if i % 3 else "not-it", lease=5)
                    for i, (k, c) in enumerate(zip(keys, claims, strict=True))
                ),
            ),
            15,
        )
        reads, renewals = got[:10000], got[10000:]
        fingerprints = [r.fingerprint if isinstance(r, Record) else None for r in reads]
        assert fingerprints == ["fp-" + k for k in keys]
        assert renewals == [bool(i % 3) for i in range(10000)]
    finally:
        await drop_prefix(raw, made[-1])
        await client.aclose()


async def test_a_turn_of_reads_of_large_records_answers_within_the_socket_timeout(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    writer_client = redis.asyncio.Redis.from_url(URL)
    client = redis.asyncio.Redis.from_url(URL, socket_timeout=1.5)
    try:
        writer = new_store(made, writer_client)
        store = new_store(made, client, prefix=writer._prefix)
        keys = [f"l{i}" for i in range(3000)]
        body = b"z" * 20000
        claims = await asyncio.gather(*(writer.claim(k, "fp-" + k, lease=5, ttl=60) for k in keys))
        await asyncio.gather(
            *(
                writer.complete(k, c.token or "", StoredResponse(200, (), body), ttl=60)
                for k, c in zip(keys, claims, strict=True)
            )
        )
        got = await asyncio.wait_for(
            asyncio.gather(*(store.get(k) for k in keys), return_exceptions=True), 20
        )
        assert not any(isinstance(g, BaseException) for g in got), next(
            g for g in got if isinstance(g, BaseException)
        )
        assert all(
            isinstance(g, Record) and g.fingerprint == "fp-" + k
            for g, k in zip(got, keys, strict=True)
        )
    finally:
        await drop_prefix(raw, made[-1])
        await writer_client.aclose()
        await client.aclose()


HOSTILE_KEYS = [
    "ключ",
    "键🔑",
    "a{b}c",
    "}{",
    "{",
    "}",
    "",
    " ",
    "\r\n",
    "x\r\n*1\r\n$4\r\nPING\r\n",
    "$-1\r\n",
    "-ERR no\r\n",
    ":lease",
    "a:lease",
    "a}:lease{",
    "\x00nul\x00",
    "*" * 3000,
]


async def test_unicode_braces_and_crlf_keys_stay_apart_and_round_trip(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    fallback_client = redis.asyncio.Redis(
        host="127.0.0.1", port=6379, db=9,
        credential_provider=redis.UsernamePasswordCredentialProvider("default", "any"),
    )  # fmt: skip
    try:
        store = new_store(made, client)
        fallback = new_store(made, fallback_client, prefix=store._prefix)
        assert not fallback._batching
        claims = await asyncio.wait_for(
            asyncio.gather(*(store.claim(k, "fp:" + k, lease=5, ttl=60) for k in HOSTILE_KEYS)), 5
        )
        assert all(c.token is not None for c in claims), claims
        for key, claim in zip(HOSTILE_KEYS, claims, strict=True):
            held = await stored(raw, store, key)
            assert held is not None and held["t"] == claim.token and held["fp"] == "fp:" + key
        names = {name async for name in raw.scan_iter(match=store._prefix + "*", count=1000)}
        assert len(names) == 2 * len(HOSTILE_KEYS)  # a record and a lease each, no overlap
        # the fallback path names the same keys: it sees and finishes them
        seen = await asyncio.gather(*(fallback.get(k) for k in HOSTILE_KEYS))
        assert [r.fingerprint if r else None for r in seen] == ["fp:" + k for k in HOSTILE_KEYS]
        bodies = [
            StoredResponse(200, ((b"x-k", k.encode()),), k.encode() + b"\r\n") for k in HOSTILE_KEYS
        ]
        done = await asyncio.gather(
            *(
                fallback.complete(k, c.token or "", b, ttl=60)
                for k, c, b in zip(HOSTILE_KEYS, claims, bodies, strict=True)
            )
        )
        assert done == [True] * len(HOSTILE_KEYS)
        records = await asyncio.gather(*(store.get(k) for k in reversed(HOSTILE_KEYS)))
        assert [r.response if r else None for r in records] == list(reversed(bodies))
    finally:
        await drop_prefix(raw, made[-1])
        await client.aclose()
        await fallback_client.aclose()


async def test_a_key_that_cannot_be_encoded_fails_alone(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        got = await asyncio.wait_for(
            asyncio.gather(
                store.claim("ok1", "fp", lease=5, ttl=60),
                store.claim("lone \ud800 surrogate", "fp", lease=5, ttl=60),
                store.get("ok1"),
                store.claim("ok2", "fp \ud800", lease=5, ttl=60),
                return_exceptions=True,
            ),
            5,
        )
        assert isinstance(got[1], UnicodeEncodeError), got
        assert isinstance(got[0], Claim) and got[0].token is not None
        assert isinstance(got[3], Claim) and got[3].token is not None
        held = await stored(raw, store, "ok2")
        assert held is not None and held["fp"] == "fp \ud800"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "options", [{"protocol": 3}, {"decode_responses": True}], ids=["resp3", "decoded"]
)
async def test_a_resp3_or_decoding_client_gives_the_same_answers(
    made: list[RedisStore], options: dict[str, Any]
) -> None:
    client = redis.asyncio.Redis.from_url(URL, **options)
    try:
        store = new_store(made, client)
        assert store._batching
        claim = await asyncio.wait_for(store.claim("k", "fp", lease=5, ttl=60), 5)
        assert claim.token is not None
        got = await asyncio.wait_for(
            asyncio.gather(
                store.claim("k", "fp", lease=5, ttl=60),
                store.renew("k", claim.token, lease=5),
                store.get("k"),
                store.get("none"),
            ),
            5,
        )
        assert got[0].existing is not None and got[0].existing.state is State.IN_FLIGHT
        assert got[1] is True and got[3] is None
        assert isinstance(got[2], Record) and got[2].fingerprint == "fp"
        assert await store.complete("k", claim.token, RESPONSE, ttl=60) is True
        done = await store.get("k")
        assert done is not None and done.response == RESPONSE
    finally:
        await client.aclose()


async def test_small_calls_behind_a_large_reply_in_later_turns_each_get_their_own(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        big = StoredResponse(200, (), b"B" * (8 * 1024 * 1024))
        claim = await store.claim("big", "fp-big", lease=5, ttl=60)
        assert await store.complete("big", claim.token or "", big, ttl=60)
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(store.get("big"))]
        for turn in range(20):  # each turn's calls written behind the big reply, in order
            tasks += [
                asyncio.ensure_future(store.claim(f"t{turn}-{i}", f"fp{turn}-{i}", lease=5, ttl=60))
                for i in range(5)
            ]
            tasks.append(asyncio.ensure_future(store.get(f"t{turn}-0")))
            await asyncio.sleep(0)
        got = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert isinstance(got[0], Record) and got[0].response == big
        at = 1
        for turn in range(20):
            for i in range(5):
                answer = got[at]
                at += 1
                held = await stored(raw, store, f"t{turn}-{i}")
                assert isinstance(answer, Claim) and answer.token is not None
                assert held is not None and held["t"] == answer.token
                assert held["fp"] == f"fp{turn}-{i}"
            read = got[at]
            at += 1
            assert read is None or (isinstance(read, Record) and read.fingerprint == f"fp{turn}-0")
    finally:
        await drop_prefix(raw, made[-1])
        await client.aclose()


# -- one item's error reply -----------------------------------------------------------


async def test_a_wrongtype_item_fails_alone_among_many_kinds(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        store = new_store(made, client)
        await raw.hset(record_name(store, "hash"), "f", "v")  # GET on it: WRONGTYPE
        mine = await store.claim("mine", "fp", lease=5, ttl=60)
        assert mine.token is not None
        got = await asyncio.gather(
            store.claim("hash", "fp", lease=5, ttl=60),
            store.claim("free", "fp", lease=5, ttl=60),
            store.renew("mine", mine.token, lease=5),
            store.renew("hash", "tok", lease=5),
            store.get("hash"),
            store.get("mine"),
            return_exceptions=True,
        )
        for bad in (got[0], got[3], got[4]):
            assert isinstance(bad, redis.exceptions.ResponseError), bad
            assert not isinstance(bad, IdempotencyStoreError) and "WRONGTYPE" in str(bad)
        assert isinstance(got[1], Claim) and got[1].token is not None
        assert got[2] is True
        assert isinstance(got[5], Record) and got[5].state is State.IN_FLIGHT
        # one kind alone in its turn, one item bad: only that one fails too
        alone = await asyncio.gather(
            store.get("hash"), store.get("free"), store.get("none"), return_exceptions=True
        )
        assert isinstance(alone[0], redis.exceptions.ResponseError)
        assert isinstance(alone[1], Record) and alone[2] is None
    finally:
        await client.aclose()


# -- the URL: database, credentials ---------------------------------------------------


async def test_the_urls_database_and_client_name_are_the_connections(
    made: list[RedisStore], raw: redis.asyncio.Redis
) -> None:
    name = f"attack-{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url(URL, client_name=name)
    db0 = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        store = new_store(made, client)
        claim = await asyncio.wait_for(store.claim("db", "fp", lease=5, ttl=60), 5)
        assert claim.token is not None
        assert await raw.exists(record_name(store, "db")) == 1
        assert await db0.exists(record_name(store, "db")) == 0  # read only: nothing there
        mine = [c for c in await raw.client_list() if c.get("name") == name]
        assert len(mine) == 1 and mine[0]["db"] == "9", mine
    finally:
        await client.aclose()
        await db0.aclose()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://nobody:wrong@127.0.0.1:6379/9", "WRONGPASS"),
        ("redis://127.0.0.1:6379/99", "DB index"),
    ],
)
async def test_a_handshake_the_server_refuses_is_a_clear_error_not_a_hang(
    made: list[RedisStore], url: str, words: str
) -> None:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=None)  # no bound: must not hang
    try:
        store = new_store(made, client)
        for _ in range(2):  # and again: no connect left stuck behind the first failure
            got = await asyncio.wait_for(
                asyncio.gather(
                    store.claim("k", "fp", lease=5, ttl=60),
                    store.get("k"),
                    store.release("k", "t"),
                    return_exceptions=True,
                ),
                3,
            )
            for error in got:
                assert isinstance(error, IdempotencyStoreError | redis.exceptions.RedisError), error
                assert words in str(error), error
    finally:
        await client.aclose()


async def test_a_wrong_password_on_the_fallback_path_is_store_down(
    made: list[RedisStore],
) -> None:
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=6379, db=9,
        credential_provider=redis.UsernamePasswordCredentialProvider("nobody", "wrong"),
    )  # fmt: skip
    try:
        store = new_store(made, client)
        with pytest.raises(IdempotencyStoreError, match="invalid username-password"):
            await asyncio.wait_for(store.claim("k", "fp", lease=5, ttl=60), 10)
    finally:
        await client.aclose()


async def test_a_wrong_password_on_the_wire_is_store_down_like_the_fallback_path(
    made: list[RedisStore],
) -> None:
    client = redis.asyncio.Redis.from_url("redis://nobody:wrong@127.0.0.1:6379/9")
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await client.get("k")  # redis-py: a connection error
        store = new_store(made, client)
        got = await asyncio.wait_for(
            asyncio.gather(
                store.claim("k", "fp", lease=5, ttl=60), store.get("k"), return_exceptions=True
            ),
            3,
        )
        assert all(isinstance(g, IdempotencyStoreError) for g in got), got
    finally:
        await client.aclose()


async def test_a_client_whose_connections_work_gives_a_store_that_works(
    made: list[RedisStore],
) -> None:
    client = redis.asyncio.Redis.from_url("redis://:unused@127.0.0.1:6379/9")
    try:
        if not await client.ping():
            raise Precondition("redis-py's own connection does not work")
        store = new_store(made, client)
        got = await asyncio.wait_for(
            asyncio.gather(store.claim("k", "fp", lease=5, ttl=60), return_exceptions=True), 3
        )
        assert isinstance(got[0], Claim) and got[0].token is not None, got
    finally:
        await client.delete(f"{made[-1]._prefix}{{k}}", f"{made[-1]._prefix}{{k}}:lease")
        await client.aclose()


# -- the redis-py fallback path -------------------------------------------------------


class _OwnConnection(Connection):
    """A connection class of its own: the wire cannot dial it, so the store falls back."""


def _fallback_clients(port: int = 6379) -> list[redis.asyncio.Redis]:
    return [
        redis.asyncio.Redis(
            host="127.0.0.1", port=port, db=9, retry=Retry(NoBackoff(), 0),
            credential_provider=redis.UsernamePasswordCredentialProvider("default", "any"),
        ),
        redis.asyncio.Redis(
            connection_pool=redis.asyncio.ConnectionPool(
                connection_class=_OwnConnection, host="127.0.0.1", port=port, db=9
            )
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("which", [0, 1], ids=["credential-provider", "own-connection-class"])
async def test_a_fallback_client_answers_every_call_right(
    made: list[RedisStore], raw: redis.asyncio.Redis, which: int
) -> None:
    client = _fallback_clients()[which]
    try:
        store = new_store(made, client)
        assert not store._batching and store._batches is None
        await raw.hset(record_name(store, "hash"), "f", "v")
        claims = await asyncio.gather(
            *(store.claim(f"k{i}", f"fp{i}", lease=5, ttl=60) for i in range(20)),
            store.claim("hash", "fp", lease=5, ttl=60),
            return_exceptions=True,
        )
        assert isinstance(claims[-1], redis.exceptions.ResponseError) and "WRONGTYPE" in str(
            claims[-1]
        )
        tokens = [c.token for c in claims[:-1] if isinstance(c, Claim)]
        assert len(set(tokens)) == 20 and None not in tokens
        for i, token in enumerate(tokens):
            held = await stored(raw, store, f"k{i}")
            assert held is not None and held["t"] == token and held["fp"] == f"fp{i}"
        t0, t1, t2, t3 = (t or "" for t in tokens[:4])
        assert await store.renew("k0", t0, lease=5) is True
        assert await store.renew("k0", "not-it", lease=5) is False
        assert await store.complete("k0", t0, RESPONSE, ttl=60) is True
        assert await store.mark_unknown("k1", t1) is True
        taken = await store.take_over("k1", lease=5)
        assert taken is not None and await store.take_over("k2", lease=5) is None
        assert await store.release("k3", t3) is True and await store.get("k3") is None
        done = await store.get("k0")
        assert done is not None and done.state is State.DONE and done.response == RESPONSE
        again = await store.claim("k0", "fp0", lease=5, ttl=60)
        assert again.existing is not None and again.existing.response == RESPONSE
        assert await store.get("k2") is not None and t2
    finally:
        await client.aclose()
        await client.connection_pool.disconnect()  # a pool given to the client stays open


async def test_a_fallback_client_behind_a_cut_fails_as_store_down_then_recovers(
    made: list[RedisStore], proxy: FreezeProxy
) -> None:
    client = _fallback_clients(proxy.port)[0]
    try:
        store = new_store(made, client)
        assert await asyncio.wait_for(store.get("warm"), 5) is None
        proxy.cut()
        got = await asyncio.wait_for(
            asyncio.gather(
                store.claim("k", "fp", lease=5, ttl=60), store.get("k"), return_exceptions=True
            ),
            10,
        )
        assert all(isinstance(g, IdempotencyStoreError) for g in got), got
        proxy.restore()
        assert (await asyncio.wait_for(store.claim("k", "fp", lease=5, ttl=60), 10)).token
    finally:
        await client.aclose()
