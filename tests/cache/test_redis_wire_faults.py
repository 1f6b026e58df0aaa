"""The async tier's connection (``_wire``) against wrong settings, a misbehaving server,
concurrent loops with cancellations and killed connections, and its lifecycle: every
caller fails clearly or gets its own value, never a hang, and the next call reconnects."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import random
import socket
import ssl
import threading
import tracemalloc
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from safeship._redis_wire import Wire
from safeship.cache import Cache
from safeship.resilience import Breaker, ConsecutiveFailures
from tests.conftest import need_service

ADMIN_URL = "redis://127.0.0.1:6379/0"


# -- a fake server ----------------------------------------------------------------------
def _take_commands(buf: bytearray) -> list[list[bytes]]:
    """The complete RESP arrays of bulk strings at the front of ``buf`` (removed from it)."""
    commands: list[list[bytes]] = []
    while True:
        end = buf.find(b"\r\n")
        if end < 0:
            return commands
        at, args = end + 2, []
        for _ in range(int(buf[1:end])):
            stop = buf.find(b"\r\n", at)
            if stop < 0:
                return commands
            size = int(buf[at + 1 : stop])
            if len(buf) < stop + 4 + size:
                return commands
            args.append(bytes(buf[stop + 2 : stop + 2 + size]))
            at = stop + 4 + size
        del buf[:at]
        commands.append(args)


class _Connection(asyncio.Protocol):
    def __init__(self, fake: FakeRedis) -> None:
        self.fake = fake
        self.buf = bytearray()
        self.out = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.number = len(self.fake.connections)
        self.fake.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for command in _take_commands(self.buf):
            self.fake.commands.append(command)
            self.fake.arrived.set()
            self.fake.answer(self, command)

    def send(self, data: bytes) -> None:
        """Write ``data``; with ``split`` one byte per loop turn."""
        assert self.transport is not None
        if not self.fake.split:
            self.transport.write(data)
            return
        idle = not self.out
        self.out += data
        if idle:
            asyncio.get_running_loop().call_soon(self._drip)

    def _drip(self) -> None:
        if self.transport is None or self.transport.is_closing() or not self.out:
            return
        self.transport.write(bytes(self.out[:1]))
        del self.out[:1]
        if self.out:
            asyncio.get_running_loop().call_soon(self._drip)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _echo_get(connection: _Connection, command: list[bytes]) -> None:
    """GET k answers ``value of k``; HELLO is unknown, as to a RESP2-only server (redis-py
    8.2 and later ask for RESP3 first, then fall back); anything else ``+OK``."""
    if command[0] == b"GET":
        connection.send(_bulk(b"value of " + command[1]))
    elif command[0].upper() == b"HELLO":
        connection.send(b"-ERR unknown command 'HELLO'\r\n")
    else:
        connection.send(b"+OK\r\n")


class FakeRedis:
    """A TCP server on 127.0.0.1 that hands every command to ``answer(connection, command)``."""

    def __init__(
        self, answer: Callable[[_Connection, list[bytes]], None], *, split: bool = False
    ) -> None:
        self.answer = answer
        self.split = split
        self.port = 0
        self.connections: list[_Connection] = []
        self.commands: list[list[bytes]] = []
        self.arrived = asyncio.Event()

    async def seen(self, count: int) -> None:
        """Wait until ``count`` commands arrived."""
        while len(self.commands) < count:
            self.arrived.clear()
            await self.arrived.wait()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def wire(self, timeout: float | None = 5.0, db: int = 0) -> Wire:
        return Wire(aredis.ConnectionPool.from_url(self.url(db)), timeout)


@asynccontextmanager
async def fake_redis(
    answer: Callable[[_Connection, list[bytes]], None],
    *,
    split: bool = False,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[FakeRedis]:
    fake = FakeRedis(answer, split=split)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(fake), "127.0.0.1", 0, ssl=tls)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        server.close()
        for connection in fake.connections:
            if connection.transport is not None:
                connection.transport.abort()
        await server.wait_closed()


async def _settle(wire: Wire) -> None:
    """Wait until the wire's connection (if any) has seen its loss."""
    protocol = wire.protocol
    if protocol is not None and protocol.lost is not None:
        await asyncio.wait_for(protocol.closed, 5)


async def _gather(*awaitables: Any) -> list[Any]:
    tasks = [asyncio.ensure_future(each) for each in awaitables]
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


# -- a server that misbehaves ----------------------------------------------------------------
async def test_replies_arriving_one_byte_at_a_time_reach_their_own_callers() -> None:
    async with fake_redis(_echo_get, split=True) as fake:
        wire = fake.wire()
        try:
            keys = [f"k{i}".encode() for i in range(40)]
            results = await _gather(
                *(wire.execute(("GET", key)) for key in keys),
                wire.execute(("SET", "a", "1"), ("GET", "a"), ("SET", "b", "2")),
            )
            assert results[:-1] == [b"value of " + key for key in keys]
            assert results[-1] == [b"OK", b"value of a", b"OK"]
            assert len(fake.connections) == 1
        finally:
            await wire.aclose()


async def test_garbage_fails_every_waiter_and_the_next_call_reconnects() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            connection.send(b"?garbage\r\n")
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            results = await _gather(*(wire.execute(("GET", f"k{i}")) for i in range(20)))
            assert all(isinstance(result, RedisConnectionError) for result in results), results
            await _settle(wire)
            assert await wire.execute(("GET", "again")) == b"value of again"
            assert len(fake.connections) == 2
        finally:
            await wire.aclose()


@pytest.mark.parametrize(
    "garbage",
    [
        b"$abc\r\n",  # a length that is no number
        b":12x\r\n",  # an integer that is none
        b"\r\n",  # an empty line
        b"*1\r\n%1\r\n",  # an unknown type inside an array
    ],
)
async def test_each_kind_of_unreadable_reply_fails_the_caller(garbage: bytes) -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            connection.send(garbage)
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            (result,) = await _gather(wire.execute(("GET", "k")))
            assert isinstance(result, RedisConnectionError)
            await _settle(wire)
            assert await wire.execute(("GET", "k")) == b"value of k"
        finally:
            await wire.aclose()


async def test_a_reply_nested_too_deep_is_an_unreadable_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            connection.send(b"*1\r\n" * 5000 + b":1\r\n")
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            (result,) = await _gather(wire.execute(("GET", "k")))
            assert isinstance(result, RedisConnectionError)  # holds today
            await _settle(wire)
            assert await wire.execute(("GET", "k")) == b"value of k"  # holds today
            assert not [r for r in caplog.records if r.name == "asyncio"]
            assert "unreadable reply" in str(result)
        finally:
            await wire.aclose()


async def test_a_reply_for_a_command_never_sent_closes_the_connection() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        _echo_get(connection, command)
        if connection.number == 0 and command[0] == b"GET":
            connection.send(b"+STRAY\r\n")  # a second reply nobody asked for

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            assert await wire.execute(("GET", "first")) == b"value of first"
            assert wire.protocol is None  # the stray reply aborted it, and it is forgotten
            assert await wire.execute(("GET", "second")) == b"value of second"
            assert wire.protocol is not None and wire.protocol.lost is None
        finally:
            await wire.aclose()


async def test_a_command_right_after_an_unreadable_reply_reconnects() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            connection.send(_bulk(b"value of " + command[1]) + b"?garbage\r\n")
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            assert await wire.execute(("GET", "first")) == b"value of first"
            assert await wire.execute(("GET", "second")) == b"value of second"
        finally:
            await wire.aclose()


async def test_an_error_reply_fails_its_caller_only_and_keeps_the_connection() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if command[1:] == [b"bad"]:
            connection.send(b"-ERR boom\r\n")
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            keys = ["a", "bad", "c", "bad", "e"]
            results = await _gather(*(wire.execute(("GET", key)) for key in keys))
            for key, result in zip(keys, results, strict=True):
                if key == "bad":
                    assert isinstance(result, ResponseError) and "boom" in str(result)
                else:
                    assert result == b"value of " + key.encode()
            assert len(fake.connections) == 1
        finally:
            await wire.aclose()


async def test_a_claimed_terabyte_bulk_then_a_close_fails_the_waiters_in_bounded_memory() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            if command[1] == b"huge":
                connection.send(b"$999999999999\r\n" + b"x" * 100_000)
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            tracemalloc.start()
            try:
                waiting = [asyncio.ensure_future(wire.execute(("GET", "huge")))]
                waiting += [asyncio.ensure_future(wire.execute(("GET", f"k{i}"))) for i in range(5)]

                async def arrived() -> None:
                    # the wire's own buffer: nothing signals it, so look every 10 ms
                    while wire.protocol is None or wire.protocol.held < 100_000:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(arrived(), 5)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 20_000_000  # what arrived, not what was claimed
            assert not any(task.done() for task in waiting)
            fake.connections[0].close()
            results = await _gather(*waiting)
            assert all(isinstance(result, RedisConnectionError) for result in results), results
            await _settle(wire)
            assert await wire.execute(("GET", "next")) == b"value of next"
        finally:
            await wire.aclose()


@pytest.mark.parametrize("first_reply", [b"", b"$999999999999\r\nxyz", b"*3\r\n:1\r\n"])
async def test_a_server_that_stops_answering_fails_every_waiter_by_the_deadline(
    first_reply: bytes,
) -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            if first_reply and len(fake.commands) == 1:
                connection.send(first_reply)
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire(timeout=0.2)
        try:
            results = await _gather(*(wire.execute(("GET", f"k{i}")) for i in range(10)))
            assert all(isinstance(result, TimeoutError) for result in results), results
            await _settle(wire)
            assert await wire.execute(("GET", "next")) == b"value of next"
        finally:
            await wire.aclose()


async def test_a_reply_after_the_deadline_never_reaches_a_later_caller() -> None:
    sent_late = asyncio.Event()

    def answer(connection: _Connection, command: list[bytes]) -> None:
        if connection.number == 0:
            late = _bulk(b"LATE value of " + command[1])
            asyncio.get_running_loop().call_later(0.3, _late, connection, late)
        else:
            _echo_get(connection, command)

    def _late(connection: _Connection, data: bytes) -> None:
        if connection.transport is not None:
            connection.send(data)
        sent_late.set()

    async with fake_redis(answer) as fake:
        wire = fake.wire(timeout=0.1)
        try:
            (result,) = await _gather(wire.execute(("GET", "slow")))
            assert isinstance(result, TimeoutError)
            await _settle(wire)
            later = [asyncio.ensure_future(wire.execute(("GET", f"k{i}"))) for i in range(5)]
            await asyncio.wait_for(sent_late.wait(), 5)
            assert [await task for task in later] == [b"value of k%d" % i for i in range(5)]
        finally:
            await wire.aclose()


async def test_an_error_reply_to_the_handshake_fails_the_call_without_a_hang() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        if command[0] == b"SELECT":
            connection.send(b"-ERR DB index is out of range\r\n")
        else:
            _echo_get(connection, command)

    async with fake_redis(answer) as fake:
        wire = fake.wire(db=3)
        try:
            for _ in range(2):
                (result,) = await _gather(wire.execute(("GET", "k")))
                # a refused handshake is a connection that cannot be used, not a reply
                assert isinstance(result, RedisConnectionError), result
                assert "out of range" in str(result)
            assert [command[0] for command in fake.commands] == [b"SELECT", b"SELECT"]
        finally:
            await wire.aclose()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_closed_port_fails_clearly_and_the_cache_serves_the_loader() -> None:
    port = _closed_port()
    wire = Wire(aredis.ConnectionPool.from_url(f"redis://127.0.0.1:{port}/0"), 1.0)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await asyncio.wait_for(wire.execute(("GET", "k")), 5)
    await wire.aclose()
    url = f"redis://127.0.0.1:{port}/0"
    cache = Cache("wirefaults", redis_url=url, memory=False, lease_ttl=0.2)

    @cache(ttl=60)
    async def double(x: int) -> int:
        return 2 * x

    try:
        assert await asyncio.wait_for(asyncio.gather(*(double(x) for x in range(5))), 10) == [
            0, 2, 4, 6, 8
        ]  # fmt: skip
        assert cache.snapshot()["degraded"] >= 5
    finally:
        await cache.aclose()
        cache.close()


# -- wrong settings against the real Redis ----------------------------------------------
def _eventually(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within 5 s (the server sees a closed socket a little
    after the client closed it)."""
    for _ in range(250):
        if condition():
            return True
        threading.Event().wait(0.02)
    return condition()


def _named(admin: redis.Redis, name: str) -> int:
    return sum(client["name"] == name for client in admin.client_list())


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    need_service("Redis", "127.0.0.1", 6379)
    client = redis.Redis.from_url(ADMIN_URL)
    try:
        yield client
    finally:
        client.close()


def _acl(admin: redis.Redis, *args: str) -> Any:
    return admin.execute_command("ACL", *args)  # type: ignore[no-untyped-call]


@pytest.fixture
def acl_user(admin: redis.Redis) -> Iterator[str]:
    """A temporary ACL user ``name`` with password ``secret-<name>`` and every permission."""
    name = "wirefaults" + uuid.uuid4().hex[:8]
    _acl(admin, "SETUSER", name, "on", f">secret-{name}", "~*", "&*", "+@all")
    try:
        yield name
    finally:
        _acl(admin, "DELUSER", name)


@pytest.mark.redis
async def test_the_acl_user_and_password_of_the_url_sign_in(acl_user: str) -> None:
    wire = Wire(
        aredis.ConnectionPool.from_url(f"redis://{acl_user}:secret-{acl_user}@127.0.0.1:6379/0"),
        5.0,
    )
    try:
        assert await wire.execute(("ACL", "WHOAMI")) == acl_user.encode()
    finally:
        await wire.aclose()


@pytest.mark.redis
async def test_a_password_for_a_server_that_needs_none_connects_as_redis_py_does() -> None:
    url = "redis://:not-needed@127.0.0.1:6379/0"
    client = aredis.Redis.from_url(url)
    wire = Wire(client.connection_pool, 5.0)
    try:
        assert await client.ping() is True  # redis-py lets the refused AUTH pass
        assert await asyncio.wait_for(wire.execute(("PING",)), 5) == b"PONG"
    finally:
        await wire.aclose()
        await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("credentials", ["{user}:wrong", "nobody-{user}:x"])
async def test_wrong_credentials_fail_clearly_and_the_cache_serves_the_loader(
    acl_user: str, credentials: str
) -> None:
    url = f"redis://{credentials.format(user=acl_user)}@127.0.0.1:6379/0"
    wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
    try:
        with pytest.raises(AuthenticationError, match=r"WRONGPASS"):  # as redis-py has it
            await asyncio.wait_for(wire.execute(("GET", "k")), 5)
    finally:
        await wire.aclose()
    cache = Cache("wirefaults" + acl_user, redis_url=url, memory=False, lease_ttl=0.2)
    loads = 0

    @cache(ttl=60)
    async def triple(x: int) -> int:
        nonlocal loads
        loads += 1
        return 3 * x

    try:
        assert await asyncio.wait_for(triple(2), 10) == 6
        assert await asyncio.wait_for(triple(2), 10) == 6
        assert loads == 2 and cache.snapshot()["degraded"] >= 2
    finally:
        await cache.aclose()
        cache.close()


@pytest.mark.redis
async def test_a_url_with_a_user_and_no_password_signs_in_as_that_user(
    admin: redis.Redis, acl_user: str
) -> None:
    _acl(admin, "SETUSER", acl_user, "nopass")
    url = f"redis://{acl_user}@127.0.0.1:6379/0"
    client = aredis.Redis.from_url(url)
    try:
        assert await client.acl_whoami() in (acl_user, acl_user.encode())
    finally:
        await client.aclose()
    wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
    try:
        assert await wire.execute(("ACL", "WHOAMI")) == acl_user.encode()
    finally:
        await wire.aclose()


@pytest.mark.redis
async def test_a_user_without_permission_and_a_missing_database_degrade_to_the_loader(
    admin: redis.Redis, acl_user: str
) -> None:
    _acl(admin, "SETUSER", acl_user, "-@all", "+auth")
    urls = [  # NOPERM answers every command; a missing database refuses the handshake
        (f"redis://{acl_user}:secret-{acl_user}@127.0.0.1:6379/0", ResponseError, "NOPERM"),
        ("redis://127.0.0.1:6379/999", RedisConnectionError, "out of range"),
    ]
    for url, error, words in urls:
        wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
        try:
            with pytest.raises(error, match=words):
                await asyncio.wait_for(wire.execute(("GET", "k")), 5)
        finally:
            await wire.aclose()
        cache = Cache("wirefaults" + acl_user, redis_url=url, memory=False, lease_ttl=0.2)

        @cache(ttl=60)
        async def square(x: int) -> int:
            return x * x

        try:
            assert await asyncio.wait_for(square(7), 10) == 49
            assert cache.snapshot()["degraded"] >= 1
        finally:
            await cache.aclose()
            cache.close()


@pytest.mark.redis
@pytest.mark.parametrize(
    ("url", "outcome"),
    [
        ("redis://localhost:6379/13?client_name=wirefaults-named", b"wirefaults-named"),
        ("redis://127.0.0.1:6379/13?client_name=wire%20faults", RedisConnectionError),  # space
        ("redis://nobody%40x:p%3Aw@127.0.0.1:6379/13", AuthenticationError),  # encoded user
        ("unix:///tmp/wirefaults-no-such.sock", RedisConnectionError),
        ("redis://127.0.0.1:6379/-1", RedisConnectionError),
    ],
)
async def test_odd_urls_connect_or_fail_clearly(admin: redis.Redis, url: str, outcome: Any) -> None:
    wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
    try:
        if isinstance(outcome, bytes):
            assert await wire.execute(("CLIENT", "GETNAME")) == outcome
            assert b" db=13 " in await wire.execute(("CLIENT", "INFO"))
        else:
            with pytest.raises(outcome):
                await asyncio.wait_for(wire.execute(("GET", "k")), 5)
    finally:
        await wire.aclose()


# -- concurrency ------------------------------------------------------------------------
@pytest.mark.redis
def test_many_loops_with_cancellations_and_killed_connections_each_get_their_own_value(
    admin: redis.Redis,
) -> None:
    prefix = "wirefaults" + uuid.uuid4().hex[:8]
    # a breaker that never stays open, so every call after a kill goes to Redis again
    breaker = Breaker(
        prefix, window=ConsecutiveFailures(100_000), open_duration=0.001, registry=None
    )
    cache = Cache(prefix, redis_url=ADMIN_URL, memory=False, breaker=breaker)
    assert cache.redis is not None
    tier = cache.redis
    errors: list[BaseException] = []
    killed: list[int] = []

    @cache(ttl=60)
    async def value(x: int) -> str:
        await asyncio.sleep(0)
        return f"value of {x}"

    async def run(seed: int) -> None:
        draw = random.Random(seed)
        base = seed * 10_000
        try:
            for round_ in range(4):
                client_id = await tier.wire().execute(("CLIENT", "ID"))
                tasks: dict[asyncio.Future[Any], tuple[str, int]] = {}
                for i in range(base, base + 250):
                    kind = draw.choice(("fn", "fn", "set", "get"))
                    if kind == "fn":
                        tasks[asyncio.ensure_future(value(i))] = (kind, i)
                    elif kind == "set":
                        tasks[asyncio.ensure_future(cache.aset(("k", i), f"set {i}"))] = (kind, i)
                    else:
                        own = tier.wire().execute(("GET", f"{prefix}:raw:{i}"))
                        tasks[asyncio.ensure_future(own)] = (kind, i)
                for _ in range(draw.randrange(3)):
                    await asyncio.sleep(0)
                for task in draw.sample(list(tasks), 50):
                    task.cancel()
                if round_ % 2:
                    await asyncio.to_thread(admin.client_kill_filter, _id=client_id)
                    killed.append(client_id)
                done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
                for (kind, i), result in zip(tasks.values(), done, strict=True):
                    if isinstance(result, asyncio.CancelledError):
                        continue
                    if kind == "fn":
                        assert result == f"value of {i}", (i, result)
                    elif kind == "set":
                        assert result is None, (i, result)
                    else:
                        assert isinstance(result, RedisConnectionError) or result == (
                            f"raw {i}".encode()
                        ), (i, result)
                # and the connection is in step afterwards: every key reads its own value
                checks = list(range(base, base + 250, 7))
                got = await asyncio.gather(*(value(i) for i in checks))
                assert got == [f"value of {i}" for i in checks]
                stored = await asyncio.gather(*(cache.aget(("k", i)) for i in checks))
                assert all(s in (None, f"set {i}") for s, i in zip(stored, checks, strict=True))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            await cache.aclose()

    raw = {
        f"{prefix}:raw:{i}": f"raw {i}"
        for s in range(4)
        for i in range(s * 10_000, s * 10_000 + 250)
    }
    admin.mset(raw)
    try:
        threads = [threading.Thread(target=lambda s=s: asyncio.run(run(s))) for s in range(4)]
        for each in threads:
            each.start()
        for each in threads:
            each.join()
        assert errors == []
        assert len(killed) == 8
    finally:
        admin.delete(*raw)
        for key in admin.scan_iter(f"*{prefix}*", count=1000):
            admin.delete(key)
        cache.close()


# -- lifecycle --------------------------------------------------------------------------
@pytest.mark.redis
async def test_aclose_with_commands_in_flight_fails_them_and_closes_the_socket(
    admin: redis.Redis,
) -> None:
    key = "wirefaults" + uuid.uuid4().hex[:8]
    wire = Wire(aredis.ConnectionPool.from_url(ADMIN_URL), 10.0)
    client_id = await wire.execute(("CLIENT", "ID"))
    blocked = [asyncio.ensure_future(wire.execute(("BLPOP", key, 30)))]
    blocked += [asyncio.ensure_future(wire.execute(("GET", key))) for _ in range(20)]
    blocked.append(asyncio.ensure_future(wire.execute(("SET", key, "a"), ("GET", key))))
    await asyncio.sleep(0)
    await asyncio.wait_for(wire.aclose(), 5)
    results = await _gather(*blocked)
    assert all(isinstance(result, RedisConnectionError) for result in results), results
    assert not any(task.cancelled() for task in blocked)
    assert await asyncio.to_thread(
        _eventually, lambda: str(client_id) not in {c["id"] for c in admin.client_list()}
    )
    with pytest.raises(RedisConnectionError, match="closed"):  # used after aclose()
        await wire.execute(("GET", key))
    await wire.aclose()  # a second close is harmless
    admin.delete(key)


async def test_aclose_while_connecting_fails_the_callers_without_cancelling_them() -> None:
    def answer(connection: _Connection, command: list[bytes]) -> None:
        pass  # never answers the handshake

    async with fake_redis(answer) as fake:
        cache = Cache("wirefaults", redis_url=fake.url(3), memory=False, lease_ttl=0.2)
        try:
            reading = asyncio.ensure_future(cache.aget("k", "the default"))
            await asyncio.wait_for(fake.seen(1), 5)
            await cache.aclose()
            (result,) = await _gather(reading)
            assert result == "the default"  # a degraded read, not a cancelled caller
        finally:
            cache.close()
        wire = fake.wire(db=3)
        waiting = asyncio.ensure_future(wire.execute(("GET", "k")))
        await asyncio.wait_for(fake.seen(2), 5)
        await wire.aclose()
        (result,) = await _gather(waiting)
        assert not waiting.cancelled()
        assert isinstance(result, RedisConnectionError)


@pytest.mark.redis
async def test_the_cache_works_again_after_aclose_in_the_same_loop(admin: redis.Redis) -> None:
    prefix = "wirefaults" + uuid.uuid4().hex[:8]
    cache = Cache(prefix, redis_url=ADMIN_URL, memory=False)
    try:
        await cache.aset("k", 1)
        await cache.aclose()
        assert await cache.aget("k") == 1
        await cache.aset("k", 2)
        assert await cache.aget("k") == 2
        assert cache.snapshot()["degraded"] == 0
        await cache.adelete("k")
    finally:
        await cache.aclose()
        cache.close()


@pytest.mark.redis
def test_loops_that_end_without_aclose_leave_one_connection_after_collection(
    admin: redis.Redis,
) -> None:
    name = "wirefaults" + uuid.uuid4().hex[:8]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = Cache(name, redis_url=f"{ADMIN_URL}?client_name={name}", memory=False)

        async def use(cache: Cache, x: int) -> Any:
            await cache.aset("k", x)
            return await cache.aget("k")

        assert [asyncio.run(use(cache, x)) for x in range(3)] == [0, 1, 2]
        gc.collect()
        assert _eventually(lambda: _named(admin, name) <= 1)
        assert cache.snapshot()["degraded"] == 0
        cache.close()
        del cache
        gc.collect()
    assert all(issubclass(w.category, ResourceWarning) for w in caught), caught
    assert _eventually(lambda: _named(admin, name) == 0)
    for key in admin.scan_iter(f"*{name}*", count=1000):
        admin.delete(key)


def _child_client_id(cache: Cache, queue: Any) -> None:
    async def use() -> Any:
        assert cache.redis is not None
        await cache.aset("child", "from the child")
        client_id = await cache.redis.wire().execute(("CLIENT", "ID"))
        return client_id, await cache.aget("child")

    try:
        queue.put(asyncio.run(use()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


@pytest.mark.redis
def test_a_forked_child_opens_its_own_connection(admin: redis.Redis) -> None:
    prefix = "wirefaults" + uuid.uuid4().hex[:8]
    cache = Cache(prefix, redis_url=ADMIN_URL, memory=False)
    assert cache.redis is not None
    tier = cache.redis
    loop = asyncio.new_event_loop()

    async def parent_id() -> Any:
        await cache.aset("parent", "from the parent")
        return await tier.wire().execute(("CLIENT", "ID"))

    try:
        before = loop.run_until_complete(parent_id())
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_client_id, args=(cache, queue))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
            child.start()
        result = queue.get(timeout=20)
        child.join(20)
        assert child.exitcode == 0
        assert isinstance(result, tuple), result
        child_id, seen = result
        assert child_id != before and seen == "from the child"
        # the parent's connection is untouched and still in step
        assert loop.run_until_complete(parent_id()) == before
        assert loop.run_until_complete(cache.aget("child")) == "from the child"
        assert loop.run_until_complete(cache.aget("parent")) == "from the parent"
    finally:
        loop.run_until_complete(cache.aclose())
        loop.close()
        cache.close()
        for key in admin.scan_iter(f"*{prefix}*", count=1000):
            admin.delete(key)


def _child_on_the_inherited_loop(cache: Cache, loop: asyncio.AbstractEventLoop, queue: Any) -> None:
    async def client_id() -> Any:
        assert cache.redis is not None
        return await cache.redis.wire().execute(("CLIENT", "ID"))

    try:
        queue.put(loop.run_until_complete(client_id()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


@pytest.mark.redis
def test_a_forked_child_on_the_inherited_loop_opens_its_own_connection(
    admin: redis.Redis,
) -> None:
    prefix = "wirefaults" + uuid.uuid4().hex[:8]
    cache = Cache(prefix, redis_url=ADMIN_URL, memory=False)
    assert cache.redis is not None
    tier = cache.redis
    loop = asyncio.new_event_loop()

    async def client_id() -> Any:
        return await tier.wire().execute(("CLIENT", "ID"))

    try:
        before = loop.run_until_complete(client_id())
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_on_the_inherited_loop, args=(cache, loop, queue))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
            child.start()
        result = queue.get(timeout=20)
        child.join(20)
        assert loop.run_until_complete(client_id()) == before  # the parent's is in step
        assert isinstance(result, int), result
        assert result != before
    finally:
        loop.run_until_complete(cache.aclose())
        loop.close()
        cache.close()


# -- TLS ----------------------------------------------------------------------------------
def _certificates(folder: Any) -> tuple[str, str, str, str]:
    """A CA (``ca.pem``) and a server certificate for ``localhost`` signed by it:
    (CA path, certificate path, key path, the CA's PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wirefaults CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pem = ca.public_bytes(serialization.Encoding.PEM)
    paths[0].write_bytes(pem)
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(paths[0]), str(paths[1]), str(paths[2]), pem.decode()


@asynccontextmanager
async def tls_fake_redis(
    folder: Any, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> AsyncIterator[tuple[FakeRedis, str, str]]:
    """A TLS fake server answering like ``_echo_get``, its CA's path and PEM."""
    ca, certificate, key, pem = _certificates(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    context.maximum_version = maximum
    async with fake_redis(_echo_get, tls=context) as fake:
        yield fake, ca, pem


async def test_tls_verifies_the_server_and_fails_clearly_when_it_cannot(tmp_path: Any) -> None:
    async with tls_fake_redis(tmp_path) as (fake, ca, _):
        base = f"rediss://localhost:{fake.port}/0"
        for url in (f"{base}?ssl_ca_certs={ca}", f"{base}?ssl_cert_reqs=none"):
            wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
            try:
                assert await wire.execute(("GET", "k")) == b"value of k"
            finally:
                await wire.aclose()
        wrong_host = f"rediss://127.0.0.1:{fake.port}/0?ssl_ca_certs={ca}"
        for url in (base, wrong_host):  # an unknown CA; a name the certificate lacks
            wire = Wire(aredis.ConnectionPool.from_url(url), 5.0)
            try:
                with pytest.raises(RedisConnectionError, match="cannot connect"):
                    await asyncio.wait_for(wire.execute(("GET", "k")), 5)
            finally:
                await wire.aclose()


async def test_tls_trusts_the_ca_given_as_data(tmp_path: Any) -> None:
    async with tls_fake_redis(tmp_path) as (fake, _, pem):
        client = aredis.Redis(host="localhost", port=fake.port, ssl=True, ssl_ca_data=pem)
        try:
            assert await client.get("k") == b"value of k"  # redis-py trusts it
        finally:
            await client.aclose()
        wire = Wire(client.connection_pool, 5.0)
        try:
            assert await asyncio.wait_for(wire.execute(("GET", "k")), 5) == b"value of k"
        finally:
            await wire.aclose()


async def test_tls_keeps_the_clients_minimum_version(tmp_path: Any) -> None:
    async with tls_fake_redis(tmp_path, maximum=ssl.TLSVersion.TLSv1_2) as (fake, ca, _):
        client = aredis.Redis(
            host="localhost", port=fake.port, ssl=True, ssl_ca_certs=ca,
            ssl_min_version=ssl.TLSVersion.TLSv1_3, retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        try:
            with pytest.raises(RedisConnectionError):  # redis-py refuses TLS 1.2
                await client.get("k")
        finally:
            await client.aclose()
        wire = Wire(client.connection_pool, 5.0)
        try:
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(wire.execute(("GET", "k")), 5)
        finally:
            await wire.aclose()


async def test_a_long_line_arriving_in_many_pieces_is_joined_once_it_can_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safeship import _redis_wire as _wire

    line = b"+" + b"x" * 600_000 + b"\r\n"
    pieces = [line[i : i + 4096] for i in range(0, len(line), 4096)]

    def answer(connection: _Connection, command: list[bytes]) -> None:
        loop = asyncio.get_running_loop()

        def write(k: int) -> None:  # one piece per loop turn, so they arrive apart
            assert connection.transport is not None
            connection.transport.write(pieces[k])
            if k + 1 < len(pieces):
                loop.call_later(0.0005, write, k + 1)

        write(0)

    reads, copied = [0], [0]
    real_received = _wire._Protocol.data_received

    def received(self: Any, data: bytes) -> None:
        reads[0] += 1
        real_received(self, data)
        copied[0] = self.reader.copied

    monkeypatch.setattr(_wire._Protocol, "data_received", received)
    async with fake_redis(answer) as fake:
        wire = fake.wire()
        try:
            assert await asyncio.wait_for(wire.execute(("GET", "k")), 10) == line[1:-2]
        finally:
            await wire.aclose()
    assert reads[0] >= 20  # the line did arrive in many reads
    assert copied[0] <= 3 * len(line)  # but was held and joined once, not per piece


@pytest.mark.redis
@pytest.mark.parametrize(
    ("query", "seconds"), [("", 2.0), ("?socket_timeout=0.25", 0.25), ("?socket_timeout=7", 7.0)]
)
async def test_a_urls_socket_timeout_bounds_each_async_command(query: str, seconds: float) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    cache = Cache("wirefaults-timeout", redis_url=f"redis://127.0.0.1:6379/0{query}", memory=False)
    try:
        assert cache.redis is not None
        assert cache.redis.command_seconds == seconds
        assert cache.redis.wire().timeout == seconds
    finally:
        await cache.aclose()
