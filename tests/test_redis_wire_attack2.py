"""Outside attack on the Redis wire (``safeship._redis_wire`` with the ``safeship._resp``
reader): garbage after whole replies, nesting and line bounds, unsolicited and cut
replies, the loop-shutdown close, a forked child on the inherited loop, and refused
handshakes.  Reader cases run against a scripted fake server; the rest against the real
Redis (db 9, unique keys and client names).  The bugs this found (a connection opened
during loop shutdown, other shutdown cleanup finding the store closed, a child on the
inherited loop reading the parent's replies) are fixed; their tests stay."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from safeship._redis_wire import Wire
from safeship._resp import MAX_DEPTH, MAX_LINE
from safeship.idempotency import IdempotencyStoreError, RedisStore

URL = "redis://127.0.0.1:6379/9"

pytestmark = pytest.mark.redis


# -- a scripted fake server -----------------------------------------------------------

Answer = Callable[["FakeConn", list[bytes]], None]


def _take(buf: bytearray) -> list[list[bytes]]:
    """The whole commands (RESP arrays of bulk strings) at the front of ``buf``."""
    out: list[list[bytes]] = []
    while True:
        end = buf.find(b"\r\n")
        if end < 0:
            return out
        at, args = end + 2, []
        for _ in range(int(buf[1:end])):
            stop = buf.find(b"\r\n", at)
            if stop < 0:
                return out
            size = int(buf[at + 1 : stop])
            if len(buf) < stop + 4 + size:
                return out
            args.append(bytes(buf[stop + 2 : stop + 2 + size]))
            at = stop + 4 + size
        del buf[:at]
        out.append(args)


class FakeConn(asyncio.Protocol):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.seen: list[list[bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fake.conns.append(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for command in _take(self.buf):
            self.seen.append(command)
            self.fake.answer(self, command)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Fake:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.conns: list[FakeConn] = []
        self.port = 0


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


@asynccontextmanager
async def fake_redis(answer: Answer) -> AsyncIterator[Fake]:
    fake = Fake(answer)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeConn(fake), "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        for conn in fake.conns:
            conn.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def wire_to(port: int, seconds: float = 3.0, db: int = 0) -> AsyncIterator[Wire]:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{port}/{db}")
    wire = Wire(client.connection_pool, seconds)
    try:
        yield wire
    finally:
        await wire.aclose()
        await client.aclose()


def get_echo(conn: FakeConn, command: list[bytes]) -> None:
    if command[0] == b"GET":
        conn.send(bulk(b"v:" + command[1]))
    else:
        conn.send(b"+OK\r\n")


# -- the reader through the wire --------------------------------------------------------


async def test_whole_replies_before_garbage_answer_their_callers_then_reconnect() -> None:
    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if command[0] != b"GET":
            get_echo(conn, command)
        elif len(conn.fake.conns) == 1 and command[1] == b"b":
            # one write: a's reply, b's reply, then garbage for c
            conn.send(bulk(b"A") + bulk(b"B") + b"!garbage\r\n")
        elif len(conn.fake.conns) == 1:
            return  # a and c wait: answered with b's write
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        await wire.execute(("PING",))  # connected: the three GETs are written together
        calls = [asyncio.ensure_future(wire.execute(("GET", k))) for k in ("a", "b", "c")]
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert done[0] == b"A" and done[1] == b"B"
        assert isinstance(done[2], RedisConnectionError)
        assert await asyncio.wait_for(wire.execute(("GET", "d")), 2) == b"v:d"
        assert len(fake.conns) == 2


async def test_garbage_split_across_reads_after_a_held_reply() -> None:
    async def drip(conn: FakeConn) -> None:
        for part in (b"$5\r\nhel", b"lo\r\n$", b"x\r\n"):
            conn.send(part)
            await asyncio.sleep(0.02)

    tasks: list[asyncio.Task[None]] = []

    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if len(conn.fake.conns) == 1 and command[0] == b"GET" and command[1] == b"b":
            tasks.append(asyncio.get_running_loop().create_task(drip(conn)))
        elif len(conn.fake.conns) == 1 and command[0] == b"GET":
            return
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        await wire.execute(("PING",))
        calls = [asyncio.ensure_future(wire.execute(("GET", k))) for k in ("a", "b")]
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 3)
        assert done[0] == b"hello"
        assert isinstance(done[1], RedisConnectionError)
        assert await asyncio.wait_for(wire.execute(("GET", "z")), 2) == b"v:z"


def _nested(depth: int) -> bytes:
    return b"*1\r\n" * (depth - 1) + b"*0\r\n"


@pytest.mark.parametrize(("depth", "ok"), [(MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
async def test_nesting_bound_through_the_wire(depth: int, ok: bool) -> None:
    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if command[0] == b"GET" and command[1] == b"deep":
            conn.send(_nested(depth))
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        if ok:
            reply = await asyncio.wait_for(wire.execute(("GET", "deep")), 2)
            levels = 0
            while reply:
                reply, levels = reply[0], levels + 1
            assert levels == MAX_DEPTH - 1 and reply == []
        else:
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(wire.execute(("GET", "deep")), 2)
        assert await asyncio.wait_for(wire.execute(("GET", "x")), 2) == b"v:x"


@pytest.mark.parametrize("cut", [None, "cr", "mid"])
@pytest.mark.parametrize("extra", [0, 1])
async def test_line_bound_through_the_wire(cut: str | None, extra: int) -> None:
    """A simple string of MAX_LINE bytes (type byte included) passes, one more fails,
    however the line is cut (the "\\r" ending one read, or the middle)."""
    line = b"+" + b"x" * (MAX_LINE - 1 + extra) + b"\r\n"

    async def drip(conn: FakeConn) -> None:
        at = len(line) - 1 if cut == "cr" else len(line) // 2
        conn.send(line[:at])
        await asyncio.sleep(0.05)
        conn.send(line[at:])

    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if command[0] == b"GET" and command[1] == b"long":
            if cut is None:
                conn.send(line)
            else:
                asyncio.get_running_loop().create_task(drip(conn))
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        if extra == 0:
            reply = await asyncio.wait_for(wire.execute(("GET", "long")), 3)
            assert reply == line[1:-2]
        else:
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(wire.execute(("GET", "long")), 3)
        assert await asyncio.wait_for(wire.execute(("GET", "x")), 2) == b"v:x"


async def test_an_unsolicited_reply_aborts_and_the_next_command_reconnects() -> None:
    def answer(conn: FakeConn, command: list[bytes]) -> None:
        get_echo(conn, command)
        if len(conn.fake.conns) == 1 and command[0] == b"GET":
            conn.send(b"+SURPRISE\r\n")

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        assert await asyncio.wait_for(wire.execute(("GET", "a")), 2) == b"v:a"
        await asyncio.sleep(0.05)  # the extra reply arrives, with no one waiting
        assert await asyncio.wait_for(wire.execute(("GET", "b")), 2) == b"v:b"
        assert len(fake.conns) == 2


async def test_a_server_that_closes_mid_array_fails_the_caller_no_hang() -> None:
    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if len(conn.fake.conns) == 1 and command[0] == b"MGET":
            conn.send(b"*3\r\n$1\r\nA\r\n$3\r\nB")
            asyncio.get_running_loop().call_later(0.05, conn.close)
        elif command[0] == b"MGET":
            conn.send(b"*1\r\n" + bulk(b"fine"))
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(wire.execute(("MGET", "a", "b", "c")), 2)
        assert time.monotonic() - started < 1.5
        assert await asyncio.wait_for(wire.execute(("MGET", "x")), 2) == [b"fine"]


async def test_error_replies_inside_a_multi_command_execute_raise() -> None:
    def answer(conn: FakeConn, command: list[bytes]) -> None:
        if command[0] == b"BAD":
            conn.send(b"-ERR nope\r\n")
        else:
            get_echo(conn, command)

    async with fake_redis(answer) as fake, wire_to(fake.port) as wire:
        with pytest.raises(redis.exceptions.ResponseError, match="nope"):
            await asyncio.wait_for(wire.execute(("GET", "a"), ("BAD",)), 2)
        # the connection stays in step
        assert await asyncio.wait_for(wire.execute(("GET", "b")), 2) == b"v:b"


# -- loop shutdown ---------------------------------------------------------------------


def _clients_named(name: str) -> int:
    admin = redis.Redis.from_url(URL)
    try:
        return sum(1 for entry in admin.client_list() if entry.get("name") == name)
    finally:
        admin.close()


def _until_gone(name: str, seconds: float = 2.0) -> int:
    deadline = time.monotonic() + seconds
    while (count := _clients_named(name)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def test_asyncio_run_twice_closes_the_first_loops_connection_no_resource_warning() -> None:
    name = f"atk2-{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url(f"{URL}?client_name={name}")
    store = RedisStore(client, prefix=f"atk2:{name}:")

    async def main(i: int) -> None:
        claim = await asyncio.wait_for(store.claim(f"k{i}", "fp", lease=5, ttl=30), 3)
        assert claim.token is not None
        assert _clients_named(name) == 1

    gc.collect()  # other tests' garbage is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main(1))
        assert _until_gone(name) == 0
        asyncio.run(main(2))
        assert _until_gone(name) == 0
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_connection_opened_during_asyncgen_shutdown_is_closed_with_the_loop() -> None:
    name = f"atk2-{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url(f"{URL}?client_name={name}")
    box = {"store": RedisStore(client, prefix=f"atk2:{name}:")}
    del client
    results: list[Any] = []

    async def cleanup_uses_store() -> AsyncIterator[None]:
        try:
            yield
        finally:
            try:
                claim = await asyncio.wait_for(box["store"].claim("late", "fp", lease=5, ttl=30), 3)
                results.append(claim.token is not None)
            except Exception as exc:  # noqa: BLE001 -- recorded and asserted on below
                results.append(exc)

    kept: list[AsyncIterator[None]] = []

    async def main() -> None:
        agen = cleanup_uses_store()
        kept.append(agen)  # alive at the end of main: shutdown_asyncgens finalizes it
        await agen.__anext__()

    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        remaining = _until_gone(name, 1.0)
        # the store let go: its leaked transport is collected here (and warned of here,
        # not in whichever test the collector would otherwise run in)
        kept.clear()
        box.clear()
        gc.collect()
    resource = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert results and results[0] is True, results  # the late call itself worked
    assert remaining == 0, ("the connection outlived its loop", resource)
    assert resource == [], resource


# -- a forked child on the inherited loop --------------------------------------------


def test_a_child_running_the_inherited_loop_never_takes_the_parents_replies() -> None:
    prefix = f"atk2:fork:{uuid.uuid4().hex}:"
    admin = redis.Redis.from_url(URL)
    keys = [f"{prefix}{i}" for i in range(50)]
    admin.mset({k: f"value-{k}" for k in keys})
    client = redis.asyncio.Redis.from_url(URL)
    wrong: list[Any] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wire = Wire(client.connection_pool, 1.5)
        assert await wire.execute(("GET", keys[0])) == f"value-{keys[0]}".encode()
        pid = os.fork()
        if pid == 0:  # the child: runs the inherited loop for a while, then leaves
            try:
                parked = loop.create_future()
                loop.call_later(0.5, parked.set_result, None)
                await parked
            finally:
                os._exit(0)
        try:
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                calls = [wire.execute(("GET", k)) for k in keys]
                answers = await asyncio.gather(*calls, return_exceptions=True)
                for key, got in zip(keys, answers, strict=True):
                    if got != f"value-{key}".encode():
                        wrong.append((key, got))
        finally:
            await loop.run_in_executor(None, os.waitpid, pid, 0)
            await wire.aclose()
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        admin.delete(*keys)
        admin.close()
    assert wrong == [], wrong[:3]


def test_a_child_on_a_new_loop_leaves_the_parents_connection_alone() -> None:
    prefix = f"atk2:fork2:{uuid.uuid4().hex}:"
    admin = redis.Redis.from_url(URL)
    keys = [f"{prefix}{i}" for i in range(50)]
    admin.mset({k: f"value-{k}" for k in keys})
    client = redis.asyncio.Redis.from_url(URL)
    wrong: list[Any] = []

    def child(wire: Wire) -> None:
        async def go() -> None:
            # the parent's wire used from a new loop in the child: refused, never written
            with suppress(Exception):
                await asyncio.wait_for(wire.execute(("GET", keys[0])), 1)
            other = redis.asyncio.Redis.from_url(URL)
            mine = Wire(other.connection_pool, 2)
            try:
                for _ in range(20):
                    await mine.execute(("GET", keys[1]))
            finally:
                await mine.aclose()
                await other.aclose()

        code = 1
        try:
            asyncio.run(go())
            code = 0
        finally:
            os._exit(code)

    async def main() -> None:
        wire = Wire(client.connection_pool, 2)
        assert await wire.execute(("GET", keys[0])) == f"value-{keys[0]}".encode()
        queued = [asyncio.ensure_future(wire.execute(("GET", k))) for k in keys]
        await asyncio.sleep(0)  # written (in flight) while the fork happens
        pid = os.fork()
        if pid == 0:
            try:
                child(wire)
            finally:
                os._exit(1)
        answers = await asyncio.gather(*queued, return_exceptions=True)
        for _ in range(10):
            answers += await asyncio.gather(*(wire.execute(("GET", k)) for k in keys))
        for i, got in enumerate(answers):
            key = keys[i % len(keys)]
            if got != f"value-{key}".encode():
                wrong.append((key, got))
        _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        await wire.aclose()
        await client.aclose()

    try:
        asyncio.run(main())
    finally:
        admin.delete(*keys)
        admin.close()
    assert wrong == [], wrong[:3]


# -- handshakes -----------------------------------------------------------------------


@pytest.fixture
def acl_user() -> Any:
    """A fresh ACL user (made here, deleted after) and its password."""
    admin = redis.Redis.from_url(URL)
    name = f"atk2_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    made: list[str] = []

    def make(*rules: str) -> tuple[str, str]:
        admin.acl_setuser(
            name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=list(rules)
        )
        made.append(name)
        return name, password

    yield make
    for user in made:
        admin.acl_deluser(user)
    admin.close()


async def test_a_wrong_password_is_an_authentication_error(acl_user: Any) -> None:
    user, _ = acl_user("+@all")
    client = redis.asyncio.Redis.from_url(f"redis://{user}:wrong@127.0.0.1:6379/9")
    wire = Wire(client.connection_pool, 2)
    try:
        with pytest.raises(AuthenticationError):
            await asyncio.wait_for(wire.execute(("PING",)), 3)
    finally:
        await wire.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    ("rules", "query"),
    [
        (("+@all", "-select"), ""),
        (("+@all", "-client"), "?client_name=atk2name"),
    ],
    ids=["no-select", "no-client"],
)
async def test_a_refused_select_or_setname_is_a_connection_error(
    acl_user: Any, rules: tuple[str, ...], query: str
) -> None:
    user, password = acl_user(*rules)
    client = redis.asyncio.Redis.from_url(f"redis://{user}:{password}@127.0.0.1:6379/9{query}")
    wire = Wire(client.connection_pool, 2)
    try:
        with pytest.raises(RedisConnectionError) as caught:
            await asyncio.wait_for(wire.execute(("PING",)), 3)
        assert not isinstance(caught.value, AuthenticationError)
    finally:
        await wire.aclose()
        await client.aclose()
    store = RedisStore(client, prefix=f"atk2:{uuid.uuid4().hex}:")
    try:
        with pytest.raises(IdempotencyStoreError):
            await asyncio.wait_for(store.claim("k", "fp", lease=5, ttl=30), 3)
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_database_out_of_range_fails_the_store_clearly() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/987654")
    store = RedisStore(client, prefix=f"atk2:{uuid.uuid4().hex}:")
    try:
        with pytest.raises(IdempotencyStoreError):
            await asyncio.wait_for(store.claim("k", "fp", lease=5, ttl=30), 3)
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_password_to_a_passwordless_default_user_passes() -> None:
    client = redis.asyncio.Redis.from_url("redis://:whatever@127.0.0.1:6379/9")
    wire = Wire(client.connection_pool, 2)
    try:
        assert await asyncio.wait_for(wire.execute(("PING",)), 3) == b"PONG"
    finally:
        await wire.aclose()
        await client.aclose()


# -- a cancel storm ---------------------------------------------------------------------


async def test_a_cancel_storm_never_hands_a_reply_to_the_wrong_caller() -> None:
    prefix = f"atk2:storm:{uuid.uuid4().hex}:"
    client = redis.asyncio.Redis.from_url(URL)
    store = RedisStore(client, prefix=prefix)
    import random

    rng = random.Random(7)
    try:
        for round_ in range(20):
            calls = {
                f"r{round_}k{i}": asyncio.ensure_future(
                    store.claim(f"r{round_}k{i}", f"fp{round_}-{i}", lease=5, ttl=30)
                )
                for i in range(60)
            }
            for _ in range(rng.randrange(0, 3)):
                await asyncio.sleep(0)
            for task in calls.values():
                if rng.random() < 0.4:
                    task.cancel()
            await asyncio.wait(calls.values(), timeout=5)
            for key, task in calls.items():
                if task.cancelled():
                    continue
                claim = task.result()
                assert claim.token is not None
                record = await asyncio.wait_for(store.get(key), 3)
                assert (
                    record is not None and record.fingerprint == f"fp{round_}-{key.split('k')[-1]}"
                )
    finally:
        await store.aclose()
        await client.aclose()


# -- the cache on the wire ---------------------------------------------------------------


def test_cache_asyncio_run_twice_leaves_no_connection_of_the_first_loop() -> None:
    from safeship.cache import Cache

    name = f"atk2c-{uuid.uuid4().hex[:12]}"
    cache = Cache(f"atk2-{name}", redis_url=f"{URL}?client_name={name}", memory=False)

    async def main(i: int) -> None:
        await cache.aset(f"k{i}", i, ttl=30)
        assert await cache.aget(f"k{i}") == i

    gc.collect()  # other tests' garbage is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main(1))
        first = _until_gone(name)
        asyncio.run(main(2))
        second = _until_gone(name)
        gc.collect()
    assert (first, second) == (0, 0)
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_cache_degrades_to_its_loader_when_the_handshake_is_refused(acl_user: Any) -> None:
    from safeship.cache import Cache

    user, password = acl_user("+@all", "-select")
    for url in (
        f"redis://{user}:{password}@127.0.0.1:6379/9",
        f"redis://{user}:wrong@127.0.0.1:6379/9",
        "redis://127.0.0.1:6379/987654",
    ):
        cache = Cache(f"atk2-{uuid.uuid4().hex}", redis_url=url, memory=False)
        loads = 0

        async def load() -> str:
            nonlocal loads
            loads += 1
            return "loaded"

        try:
            started = time.monotonic()
            got = await asyncio.wait_for(cache.aget_or_set("k", load, ttl=30), 5)
            assert got == "loaded" and loads == 1, url
            assert await asyncio.wait_for(cache.aget("k", "dflt"), 5) == "dflt"
            assert time.monotonic() - started < 3, url
        finally:
            await cache.aclose()


def test_a_generator_cleanup_on_an_open_connection_still_works_at_loop_shutdown() -> None:
    """Cleanup code run by shutdown_asyncgens (a generator left suspended, on a
    connection that is open already) may need the store: the close guard runs in the
    same gather, so whether the call works depends on which generator goes first."""
    outcomes: list[Any] = []
    for _ in range(6):
        name = f"atk2-{uuid.uuid4().hex[:12]}"
        client = redis.asyncio.Redis.from_url(f"{URL}?client_name={name}")
        store = RedisStore(client, prefix=f"atk2:{name}:")
        kept: list[AsyncIterator[None]] = []

        async def cleanup_uses_store(store: RedisStore = store) -> AsyncIterator[None]:
            try:
                yield
            finally:
                try:
                    claim = await asyncio.wait_for(store.claim("late", "fp", lease=5, ttl=30), 3)
                    outcomes.append(claim.token is not None)
                except Exception as exc:  # noqa: BLE001 -- recorded and asserted on below
                    outcomes.append(repr(exc))

        async def main(store: RedisStore = store, kept: list[AsyncIterator[None]] = kept) -> None:
            await asyncio.wait_for(store.claim("early", "fp", lease=5, ttl=30), 3)
            agen = cleanup_uses_store()
            kept.append(agen)
            await agen.__anext__()

        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            asyncio.run(main())
        assert _until_gone(name) == 0
    assert outcomes == [True] * 6, outcomes


def test_a_first_connect_while_asyncio_run_cancels_tasks_is_closed_with_the_loop() -> None:
    """A task cancelled at the end of asyncio.run whose cleanup makes the loop's first
    call: it connects during the cancel phase (before the async generators are shut
    down), so the guard still closes that connection with the loop."""
    name = f"atk2-{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url(f"{URL}?client_name={name}")
    store = RedisStore(client, prefix=f"atk2:{name}:")
    results: list[Any] = []

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            claim = await asyncio.wait_for(store.claim("late", "fp", lease=5, ttl=30), 3)
            results.append(claim.token is not None)

    async def main() -> None:
        asyncio.get_running_loop().create_task(worker())
        await asyncio.sleep(0)  # left running: asyncio.run cancels it

    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        remaining = _until_gone(name)
        gc.collect()
    assert results == [True]
    assert remaining == 0
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
