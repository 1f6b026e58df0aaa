"""The async tier's connection per event loop (``_wire``): the RESP2 reader at every split
of its input, commands pipelined in order, cancelled callers that must not shift anyone
else's reply, a cut connection failing every waiter and the next call reconnecting, one
connection per event loop, and closing without leaving a socket open."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from safeship._redis_wire import ReplyError, Wire, _Protocol, bulk, bulks, pack
from safeship.cache import Cache
from tests.conftest import need_service
from tests.support.tcp_proxy import TcpProxy


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


class _FakeWire:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout: float | None = None
        self.late = False
        self.protocol: Any = None

    def forget(self, protocol: Any) -> None:
        pass


REPLIES = (
    b"$5\r\nhello\r\n"  # bulk
    b"$-1\r\n"  # nil
    b":42\r\n"  # integer
    b"+OK\r\n"  # simple string
    b"-ERR wrong kind\r\n"  # error
    b"*3\r\n:1\r\n*2\r\n$0\r\n\r\n$-1\r\n-ERR inner\r\n"  # nested array, error inside
    b"$4\r\n\r\n\r\n\r\n"  # a bulk string made of CR LF
)


def _protocol() -> tuple[_Protocol, _Transport]:
    protocol = _Protocol(_FakeWire())  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def test_every_split_of_the_replies_reads_the_same_values() -> None:
    for cut in range(len(REPLIES) + 1):
        protocol, transport = _protocol()
        futures = [protocol.send((("GET", str(i)),)) for i in range(7)]
        assert transport.written == [pack(("GET", "0"))]  # idle: written at once
        protocol._flush()
        assert b"".join(transport.written) == b"".join(pack(("GET", str(i))) for i in range(7))
        protocol.data_received(REPLIES[:cut])
        protocol.data_received(REPLIES[cut:])
        assert not transport.aborted
        assert [f.result() for f in futures[:4]] == [b"hello", None, 42, b"OK"]
        assert isinstance(futures[4].exception(), ResponseError)
        array = futures[5].result()
        assert array[:2] == [1, [b"", None]]
        assert isinstance(array[2], ReplyError) and str(array[2]) == "ERR inner"
        assert futures[6].result() == b"\r\n\r\n"
        assert not protocol.waiters and protocol.held == 0


async def test_byte_by_byte_replies_and_a_group_of_commands() -> None:
    protocol, _ = _protocol()
    group = protocol.send((("SET", "a", 1), ("GET", "a"), ("INCR", "a")))
    after = protocol.send((("GET", "b"),))
    for byte in b"+OK\r\n$1\r\n1\r\n:2\r\n$1\r\nz\r\n":
        protocol.data_received(bytes([byte]))
    assert group.result() == [b"OK", b"1", 2]
    assert after.result() == b"z"


async def test_a_large_reply_in_small_pieces_is_joined_once_it_is_complete() -> None:
    protocol, _ = _protocol()
    big, small = protocol.send((("GET", "big"),)), protocol.send((("GET", "small"),))
    value = bytes(range(256)) * 4096  # 1 MiB
    stream = b"$%d\r\n%b\r\n$2\r\nok\r\n" % (len(value), value)
    for at in range(0, len(stream), 1000):
        protocol.data_received(stream[at : at + 1000])
    assert (big.result(), small.result()) == (value, b"ok")
    assert protocol.reader.copied <= 2 * len(stream)  # not once per piece


async def test_a_cancelled_waiters_reply_is_dropped_not_passed_on() -> None:
    protocol, _ = _protocol()
    first, second, third = (protocol.send((("GET", k),)) for k in "abc")
    second.cancel()
    protocol.data_received(b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
    assert (first.result(), third.result()) == (b"a", b"c")


async def test_an_unasked_or_garbled_reply_aborts_and_fails_the_waiters() -> None:
    protocol, transport = _protocol()
    waiting = protocol.send((("GET", "a"),))
    protocol.data_received(b"?what\r\n")
    assert transport.aborted
    protocol.connection_lost(None)
    assert isinstance(waiting.exception(), RedisConnectionError)
    with pytest.raises(RedisConnectionError):
        protocol.send((("GET", "a"),))
    protocol, transport = _protocol()
    protocol.data_received(b":1\r\n")
    assert transport.aborted


def test_arguments_are_packed_as_bulk_strings() -> None:
    assert pack(("SET", b"k\r\n", 12, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        pack(("SET", "k", True))
    with pytest.raises(TypeError):
        pack(("SET", "k", None))


def test_many_arguments_pack_as_each_one_would() -> None:
    samples: list[Any] = ["", "k", "é\r\n", b"", b"\x00raw", 0, -7, 2**70, 1.5, float("inf")]
    for count in range(12):  # past the per-count templates too
        args = tuple(random.choice(samples) for _ in range(count))
        assert bulks(args) == b"".join(bulk(arg) for arg in args), args
    for bad in (True, None, object()):
        with pytest.raises(TypeError):
            bulks(("k", bad))


# -- against the real Redis ----------------------------------------------------------------
@pytest.fixture
def prefix() -> str:
    return "wire" + uuid.uuid4().hex[:10]


@pytest.mark.redis
async def test_cancelled_callers_mid_flight_leave_every_other_caller_its_own_value(
    redis_url: str, prefix: str
) -> None:
    wire = Wire(aredis.ConnectionPool.from_url(redis_url), timeout=10.0)
    keys = [f"{prefix}:{i}" for i in range(300)]
    await wire.execute(*(("SET", key, f"value of {key}") for key in keys))
    draw = random.Random(7)
    try:
        for _ in range(20):
            tasks = {key: asyncio.ensure_future(wire.execute(("GET", key))) for key in keys}
            await asyncio.sleep(0)  # every command written, no reply read yet
            assert wire.protocol is not None and len(wire.protocol.waiters) == len(keys)
            cancelled = set(draw.sample(keys, 100))
            for key in cancelled:
                tasks[key].cancel()
            for key, task in tasks.items():
                if key in cancelled:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    assert await task == f"value of {key}".encode()
            for key in draw.sample(keys, 20):  # and the connection is still in step
                assert await wire.execute(("GET", key)) == f"value of {key}".encode()
    finally:
        await wire.execute(("DEL", *keys))
        await wire.aclose()


@pytest.mark.redis
async def test_cancelled_cache_callers_never_get_or_store_another_keys_value(
    redis_url: str, prefix: str
) -> None:
    cache = Cache(prefix, redis_url=redis_url, memory=False)
    loads = 0

    @cache(ttl=60)
    async def triple(x: int) -> int:
        nonlocal loads
        loads += 1
        return 3 * x

    try:
        assert await asyncio.gather(*(triple(x) for x in range(200))) == [3 * x for x in range(200)]
        loads = 0
        for round_ in range(10):
            tasks = [asyncio.ensure_future(triple(x)) for x in range(200)]
            for _ in range(round_ % 3):
                await asyncio.sleep(0)
            for task in tasks[round_ % 2 :: 2]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for x, result in enumerate(results):
                assert isinstance(result, asyncio.CancelledError) or result == 3 * x
        assert [await triple(x) for x in range(200)] == [3 * x for x in range(200)]
        assert loads == 0
    finally:
        await cache.aclose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    need_service("Redis", "127.0.0.1", 6379)
    proxied = TcpProxy("127.0.0.1", 6379)
    try:
        yield proxied
    finally:
        proxied.close()


@pytest.mark.redis
async def test_a_cut_connection_fails_every_waiter_and_the_next_call_reconnects(
    proxy: TcpProxy, prefix: str
) -> None:
    wire = Wire(aredis.ConnectionPool.from_url(f"redis://127.0.0.1:{proxy.port}/0"), 10.0)
    try:
        await wire.execute(("SET", prefix, b"v"))
        first = wire.protocol
        # BLPOP keeps the whole pipeline waiting behind it until the cut
        blocked = [asyncio.ensure_future(wire.execute(("BLPOP", prefix + ":l", 30)))]
        blocked += [asyncio.ensure_future(wire.execute(("GET", prefix))) for _ in range(50)]
        await asyncio.sleep(0.1)
        assert not any(task.done() for task in blocked)
        await asyncio.to_thread(proxy.cut)
        results = await asyncio.wait_for(asyncio.gather(*blocked, return_exceptions=True), 5)
        assert all(isinstance(result, RedisConnectionError) for result in results)
        with pytest.raises(RedisConnectionError):  # refused while cut
            await wire.execute(("GET", prefix))
        proxy.restore()
        assert await wire.execute(("GET", prefix)) == b"v"
        assert wire.protocol is not None and wire.protocol is not first
    finally:
        await wire.aclose()
        await asyncio.to_thread(proxy.close)
        cleanup = aredis.Redis.from_url("redis://127.0.0.1:6379/0")
        await cleanup.delete(prefix)
        await cleanup.aclose()


@pytest.mark.redis
async def test_an_error_reply_fails_its_caller_only(redis_url: str, prefix: str) -> None:
    wire = Wire(aredis.ConnectionPool.from_url(redis_url), timeout=10.0)
    try:
        await wire.execute(("SET", prefix, b"not a list"))
        wrong = asyncio.ensure_future(wire.execute(("LPUSH", prefix, b"x")))
        right = asyncio.ensure_future(wire.execute(("GET", prefix)))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wrong
        assert await right == b"not a list"
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wire.execute(("GET", prefix), ("LPUSH", prefix, b"x"))
        assert await wire.execute(("DEL", prefix)) == 1
    finally:
        await wire.aclose()


@pytest.mark.redis
async def test_the_database_of_the_url_is_selected(redis_url: str, prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    other = aredis.Redis.from_url(base + "/13")
    wire = Wire(aredis.ConnectionPool.from_url(base + "/13"), timeout=10.0)
    try:
        await wire.execute(("SET", prefix, b"in 13"))
        assert await other.get(prefix) == b"in 13"
    finally:
        await other.delete(prefix)
        await other.aclose()
        await wire.aclose()


@pytest.mark.redis
def test_each_event_loop_has_its_own_connection_and_values(redis_url: str, prefix: str) -> None:
    cache = Cache(prefix, redis_url=redis_url, memory=False)
    assert cache.redis is not None

    @cache(ttl=60)
    async def tagged(x: int) -> str:
        return f"{x}"

    protocols: list[Any] = []
    errors: list[BaseException] = []

    async def run(offset: int) -> None:
        try:
            for x in range(offset, offset + 50):
                assert await tagged(x) == f"{x}"
            assert await asyncio.gather(*(tagged(x) for x in range(100))) == [
                f"{x}" for x in range(100)
            ]
            protocols.append(cache.redis.wire().protocol)  # type: ignore[union-attr]
        finally:
            await cache.aclose()

    def thread(offset: int) -> None:
        try:
            asyncio.run(run(offset))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(10 * i,)) for i in range(4)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert errors == []
    assert len({id(protocol) for protocol in protocols}) == 4
    cache.close()


@pytest.mark.redis
async def test_closing_leaves_no_socket_open(redis_url: str, prefix: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            cache = Cache(prefix, redis_url=redis_url, memory=False)
            await cache.aset("k", 1)
            assert await cache.aget("k") == 1
            await cache.adelete("k")
            await cache.aclose()
            del cache
            gc.collect()
        await asyncio.sleep(0)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_client_whose_server_the_wire_cannot_dial_is_refused() -> None:
    from redis.asyncio.sentinel import Sentinel

    from safeship.cache import CacheConfigError

    managed = Sentinel([("127.0.0.1", 26379)]).master_for("mymaster")  # type: ignore[no-untyped-call,unused-ignore]
    with pytest.raises(CacheConfigError, match="SentinelManagedConnection"):
        Cache("refused", aredis=managed, memory=False)
    with pytest.raises(CacheConfigError, match="connection pool"):
        Cache("refused", aredis=object(), memory=False)
    for url in ("redis://127.0.0.1:1/3", "rediss://127.0.0.1:1/0", "unix:///tmp/none.sock"):
        pool = aredis.ConnectionPool.from_url(url)
        Cache("accepted", aredis=aredis.Redis(connection_pool=pool), memory=False)


@pytest.mark.redis
async def test_concurrent_hits_on_one_key_share_one_read(redis_url: str, prefix: str) -> None:
    cache = Cache(prefix, redis_url=redis_url, memory=False)
    assert cache.redis is not None

    @cache(ttl=60)
    async def double(x: int) -> int:
        return 2 * x

    try:
        assert await double(4) == 8
        before = cache.snapshot()["coalesced"]
        calls = [asyncio.ensure_future(double(4)) for _ in range(50)]
        await asyncio.sleep(0)  # the first reads; the others follow it
        protocol = cache.redis.wire().protocol
        assert protocol is not None and len(protocol.waiters) == 1
        calls[1].cancel()  # a follower leaving changes nothing for the rest
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results.pop(1), asyncio.CancelledError)
        assert results == [8] * 49
        assert cache.snapshot()["coalesced"] - before == 49
    finally:
        await cache.aclose()


@pytest.mark.redis
async def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure(
    redis_url: str, prefix: str
) -> None:
    cache = Cache(prefix, redis_url=redis_url, memory=False)
    assert cache.redis is not None
    admin = aredis.Redis.from_url(redis_url)

    @cache(ttl=60)
    async def square(x: int) -> int:
        return x * x

    try:
        assert await square(3) == 9
        wire = cache.redis.wire()
        first = wire.protocol
        assert first is not None
        client_id = await wire.execute(("CLIENT", "ID"))
        assert await admin.client_kill_filter(_id=client_id) == 1
        await asyncio.wait_for(first.closed, 5)  # the loop saw the server close it
        before = cache.snapshot()
        assert await square(3) == 9
        after = cache.snapshot()
        assert (after["degraded"], after["loads"]) == (before["degraded"], before["loads"])
        assert wire.protocol is not None and wire.protocol is not first
    finally:
        await admin.aclose()
        await cache.aclose()
