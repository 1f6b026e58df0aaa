"""Async Redis round trips on safeship's own connection: one per event loop, pipelined.

Used by the cache's async tier and the idempotency key store. Every command goes
through :meth:`Wire.execute`: it is written on the loop's connection at once when
nothing is in flight, or, when replies are pending, queued and written with the others
issued in the same loop turn (one write). Replies come back in order and the protocol
hands each to the next waiter in its FIFO, from the transport's callback (no task per
command, no pool to check out of, no lock).

A caller that is cancelled leaves its place in the FIFO: its reply is read and dropped,
so no other caller ever gets it. A lost connection fails every waiter with a
``ConnectionError``; the next command connects again. A reply later than ``timeout``
seconds (the oldest waiter's deadline, watched by one timer per connection) aborts the
connection and fails every waiter with ``TimeoutError``: a server that stopped answering
cannot be told apart from one that is slow to answer the first command in line.

The wire speaks RESP2 and takes the address, database, credentials and client name from
a redis-py async client's connection pool (``connection_kwargs``): TCP, TLS
(``rediss://``) and Unix sockets (:func:`unsupported` says why another pool is refused).
:class:`PerLoop` keeps one wire (or an object holding one) per event loop and forgets
them all in a forked child, where a wire made before the fork writes nothing; a wire's
connection closes when its loop shuts down (``asyncio.run``), or at :meth:`Wire.aclose`.
Pub/sub subscriptions keep using the redis-py client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from safeship._resp import GarbledReplyError, Reader, ReplyError

__all__ = [
    "PerLoop",
    "ReplyError",
    "Wire",
    "bulk",
    "bulks",
    "loop_wires",
    "pack",
    "pool_setting",
    "response_error",
    "unsupported",
]


def unsupported(pool: Any) -> str | None:
    """Why the wire cannot reach the server of this redis-py async pool (None: it can).
    It dials the pool's address itself, so a pool that finds its server another way
    (Sentinel, a cluster) or signs in through a credential provider is refused."""
    from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

    kwargs = getattr(pool, "connection_kwargs", None)
    kind = getattr(pool, "connection_class", None)
    if not isinstance(kwargs, dict) or kind is None:
        return "the client has no redis.asyncio connection pool"
    if kind not in (Connection, SSLConnection, UnixDomainSocketConnection):
        return f"its pool makes {kind.__name__} connections (TCP, TLS or a Unix socket only)"
    if kwargs.get("credential_provider") is not None:
        return "its pool signs in through a credential provider (username/password only)"
    return None


def pool_setting(pool: Any, name: str) -> Any:
    """The pool's connection setting ``name``: as given, else the default of its
    connection class (redis-py's own connections then get the same value, e.g. a 5 s
    ``socket_timeout``)."""
    kwargs = pool.connection_kwargs
    if name in kwargs:
        return kwargs[name]
    import inspect

    for kind in type.mro(pool.connection_class):
        init = kind.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):  # a bool is an int: refuse it rather than send "True"
        raise TypeError("a Redis command argument cannot be a bool")
    if isinstance(arg, int | float):
        return repr(arg).encode()
    raise TypeError(f"a Redis command argument cannot be {type(arg).__name__}")


def bulk(arg: Any) -> bytes:
    """One argument as a RESP bulk string: a packed command is ``*<n>\\r\\n`` and then
    its ``n`` arguments so."""
    data = arg.encode() if arg.__class__ is str else _encode(arg)
    return b"$%d\r\n%b\r\n" % (len(data), data)


_BULKS = [b"$%d\r\n%b\r\n" * count for count in range(9)]


def bulks(args: tuple[Any, ...]) -> bytes:
    """Several arguments as RESP bulk strings, one after another (``bulk`` of each)."""
    if len(args) >= len(_BULKS):
        return b"".join(map(bulk, args))
    parts: list[Any] = []
    for arg in args:
        cls = arg.__class__
        data = arg.encode() if cls is str else b"%d" % arg if cls is int else _encode(arg)
        parts += (len(data), data)
    return _BULKS[len(args)] % tuple(parts)


def pack(command: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    if len(command) == 2 and command[0] == "GET" and command[1].__class__ is str:
        key = command[1].encode()  # the hit path's command, in one formatting
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode() if arg.__class__ is str else _encode(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


#: How many forks this process descends from (a wire made before a fork is not the
#: child's: it writes nothing and its waiters fail).
_GENERATION = [0]


def _connection_error(message: str) -> Exception:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError(message)


def response_error(error: ReplyError) -> Exception:
    """``error`` as redis-py's ``ResponseError``, what a redis-py caller expects."""
    from redis.exceptions import ResponseError

    return ResponseError(str(error))


class _Protocol(asyncio.Protocol):
    """One connection: hands each reply to the next waiter ``(future, count, deadline)``
    (``count`` replies each), writes the commands queued in one loop turn together."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.loop = wire.loop
        self.waiters: collections.deque[tuple[asyncio.Future[Any], int, float]] = (
            collections.deque()
        )
        self.reader = Reader()
        self.replies: list[Any] = []  # the head waiter's replies so far, when count > 1
        self.pending: list[bytes] = []
        self.flushing = self.watching = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.lost: BaseException | None = None
        self.generation = _GENERATION[0]

    def send(self, commands: tuple[tuple[Any, ...], ...]) -> asyncio.Future[Any]:
        """Queue ``commands``; the future gets the reply (the list of replies for several)."""
        count = len(commands)
        return self.write(pack(commands[0]) if count == 1 else b"".join(map(pack, commands)), count)

    def write(self, data: bytes, count: int, *, now: bool = False) -> asyncio.Future[Any]:
        """Queue ``data``, ``count`` commands packed already; answered as :meth:`send`.
        ``now``: write at once, with whatever is queued before it (a caller that has
        gathered its loop turn's commands itself gains nothing by waiting a turn)."""
        if self.lost is not None:
            raise self.lost
        if self.generation != _GENERATION[0]:
            raise self.disown()
        future = self.loop.create_future()
        timeout = self.wire.timeout
        deadline = self.loop.time() + timeout if timeout is not None else 0.0
        waiters = self.waiters
        idle = not waiters
        waiters.append((future, count, deadline))
        if idle:  # nothing in flight: no reply to wait behind, write now
            self.transport.write(data)  # type: ignore[union-attr]
        elif now:  # in order: what was queued first is written first
            pending = self.pending
            if pending:
                pending.append(data)
                data, self.pending = b"".join(pending), []
            self.transport.write(data)  # type: ignore[union-attr]
        else:
            self.pending.append(data)
            if not self.flushing:
                self.flushing = True
                self.loop.call_soon(self._flush)
        if timeout is not None and not self.watching:
            self.watching = True
            self.loop.call_at(deadline, self._watch)
        return future

    def _flush(self) -> None:
        self.flushing = False
        data, self.pending = b"".join(self.pending), []
        if self.generation != _GENERATION[0]:  # forked with this queued: not the child's
            self.disown()
        elif data and self.lost is None and self.transport is not None:
            self.transport.write(data)

    def _watch(self) -> None:
        """Abort when the oldest command is overdue, else look again at its deadline
        (or stop watching when nothing is in flight)."""
        self.watching = False
        if self.lost is not None or not self.waiters:
            return
        if self.generation != _GENERATION[0]:
            self.disown()
            return
        deadline = self.waiters[0][2]
        if self.loop.time() >= deadline:
            self.abort(TimeoutError(f"Redis did not answer within {self.wire.timeout} s"))
            return
        self.watching = True
        self.loop.call_at(deadline, self._watch)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _PROTOCOLS.add(self)

    @property
    def held(self) -> int:
        """Bytes held of a reply cut short between reads."""
        return self.reader.held

    def data_received(self, data: bytes) -> None:
        garbled = None
        try:
            replies = self.reader.feed(data)
        except GarbledReplyError as exc:  # garbled, or nested or long past all reason
            replies, garbled = exc.replies, exc  # the whole replies before it are answers
        waiters = self.waiters
        for reply in replies:
            if not waiters:
                self.abort(_connection_error("Redis sent a reply that no command asked for"))
                return
            future, count, _ = waiters[0]
            if count > 1:
                self.replies.append(reply)
                if len(self.replies) < count:
                    continue
                reply, self.replies = self.replies, []
            waiters.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped
                continue
            if count == 1 and reply.__class__ is ReplyError:
                future.set_exception(response_error(reply))
            else:
                future.set_result(reply)
        if garbled is not None:
            self.abort(_connection_error(f"Redis sent an unreadable reply: {garbled}"))
        elif not waiters and self.wire.late and self.wire.protocol is self:
            # its loop is shutting down: closed once idle (not inside its handshake)
            self.wire.forget(self)
            self.transport.close()  # type: ignore[union-attr]

    def disown(self) -> BaseException:
        """In a forked child: leave the parent's connection alone (its socket and the
        inherited selector's registration are the parent's too) and fail its waiters."""
        if self.lost is None:
            self.lost = _connection_error("the Redis connection belongs to the parent process")
        self._fail_waiters()
        return self.lost

    def _fail_waiters(self) -> None:
        """Forget this connection and fail every command waiting on it with ``lost``."""
        self.wire.forget(self)
        waiters, self.waiters = self.waiters, collections.deque()
        self.pending = []
        for future, _, _ in waiters:
            if not future.done():
                future.set_exception(self.lost)  # type: ignore[arg-type]

    def abort(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self.wire.forget(self)  # the next command connects again, even before connection_lost
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = _connection_error(f"Redis connection lost: {exc!r}")
        self._fail_waiters()
        if not self.closed.done():
            self.closed.set_result(None)


class Wire:
    """The connection of one event loop (opened on first use, again after a loss)."""

    def __init__(self, pool: Any, timeout: float | None) -> None:
        from redis.asyncio.connection import SSLConnection

        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        self.tls = pool.connection_class is SSLConnection
        self.guard: Any = None  # closes the connection when the loop shuts down
        self.late = False  # the loop is shutting down: a connection closes once idle
        self.timeout = timeout
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Task[_Protocol] | None = None
        self.closing = False

    def execute(self, *commands: tuple[Any, ...]) -> Awaitable[Any]:
        """The reply to one command, or the list of replies to several (written together,
        answered together; an error reply among them raises). One command on an open
        connection is the reply's future itself, with no coroutine around it."""
        protocol = self.protocol
        if protocol is None or len(commands) > 1:
            return self._execute(commands)
        return protocol.send(commands)

    async def _execute(self, commands: tuple[tuple[Any, ...], ...]) -> Any:
        protocol = self.protocol
        if protocol is None:
            protocol = await self._connect()
        if len(commands) == 1:
            return await protocol.send(commands)
        replies = await protocol.send(commands)
        for reply in replies:
            if reply.__class__ is ReplyError:
                raise response_error(reply)
        return replies

    def submit(self, data: bytes, count: int) -> asyncio.Future[Any]:
        """``count`` commands packed already (see :func:`bulk`), written at once (the
        caller gathered them), as a future to add callbacks to, with no coroutine around
        it once connected: one command's reply (an error reply fails it with redis-py's
        ``ResponseError``), or the list of several commands' replies (an error reply is a
        :class:`ReplyError` value in it, the others answered as usual)."""
        protocol = self.protocol
        if protocol is None:
            return self.loop.create_task(self._submit(data, count))
        return protocol.write(data, count, now=True)

    async def _submit(self, data: bytes, count: int) -> Any:
        protocol = self.protocol
        if protocol is None:
            protocol = await self._connect()
        return await protocol.write(data, count, now=True)

    def forget(self, protocol: _Protocol) -> None:
        if self.protocol is protocol:
            self.protocol = None

    async def _connect(self) -> _Protocol:
        if self.closing:
            raise _connection_error("the Redis connection is closed")
        if self.connecting is None or self.connecting.done():
            self.connecting = self.loop.create_task(self._open())
        connecting = self.connecting
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if connecting.cancelled() and not (current is not None and current.cancelling()):
                # aclose() stopped the connect; this caller was not cancelled itself
                raise _connection_error("the Redis connection is closed") from None
            raise

    async def _open(self) -> _Protocol:
        kwargs = self.kwargs
        seconds = pool_setting(self.pool, "socket_connect_timeout") or pool_setting(
            self.pool, "socket_timeout"
        )
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(seconds):
                if kwargs.get("path"):
                    _, protocol = await self.loop.create_unix_connection(
                        lambda: _Protocol(self), kwargs["path"]
                    )
                else:
                    _, protocol = await self.loop.create_connection(
                        lambda: _Protocol(self), kwargs.get("host") or "localhost",
                        int(kwargs.get("port") or 6379), ssl=self._ssl_context(),
                    )  # fmt: skip
                for command in self._handshake():  # one at a time: the failing one raises
                    await self._greet(protocol, command)
        except BaseException as exc:
            if protocol is not None:
                protocol.abort(_connection_error("the Redis handshake failed"))
            if isinstance(exc, OSError):
                raise _connection_error(f"cannot connect to Redis: {exc!r}") from exc
            raise
        if self.closing:
            protocol.abort(_connection_error("the Redis connection is closed"))
            raise _connection_error("the Redis connection is closed")
        if self.guard is None and not self.late:
            await self._watch_loop_end()
        self.protocol = protocol
        return protocol

    async def _watch_loop_end(self) -> None:
        """Start the generator whose finalization at loop shutdown closes the connection,
        unless the loop has finalized its generators already (it warns so when a new one
        starts): then the connection is late and closes once idle."""
        guard = _until_loop_ends(self)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await guard.__anext__()  # the loop's first-iteration hook; runs to its yield
        for warning in caught:
            if issubclass(warning.category, ResourceWarning) and "shutdown_asyncgens" in str(
                warning.message
            ):
                self.late = True
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        self.guard = guard

    @staticmethod
    async def _greet(protocol: _Protocol, command: tuple[Any, ...]) -> None:
        """One handshake command; a refusal is a connection error, as redis-py has it
        (a wrong password its ``AuthenticationError``), not a reply to hand a caller.
        A password sent to a server that needs none is let pass, as redis-py does."""
        from redis.exceptions import AuthenticationError, ResponseError

        try:
            await protocol.send((command,))
        except ResponseError as exc:
            if command[0] != "AUTH":
                raise _connection_error(f"Redis refused {command[0]}: {exc}") from exc
            if "without any password configured" in str(exc) or "no password is set" in str(exc):
                return
            raise AuthenticationError(f"Redis refused the credentials: {exc}") from exc

    def _handshake(self) -> list[tuple[Any, ...]]:
        kwargs = self.kwargs
        commands: list[tuple[Any, ...]] = []
        password, username = kwargs.get("password"), kwargs.get("username")
        if username:  # a named user signs in as that user, with or without a password
            commands.append(("AUTH", username, password or ""))
        elif password is not None:
            commands.append(("AUTH", password))
        if kwargs.get("db"):
            commands.append(("SELECT", int(kwargs["db"])))
        if kwargs.get("client_name"):
            commands.append(("CLIENT", "SETNAME", kwargs["client_name"]))
        return commands

    def _ssl_context(self) -> Any:
        """The TLS context redis-py would use for this pool (every ``ssl_*`` setting and
        its defaults: CA data and path, minimum version, ciphers, verify flags)."""
        if not self.tls:
            return None
        import inspect

        from redis.asyncio.connection import RedisSSLContext, SSLConnection

        settings = inspect.signature(SSLConnection.__init__).parameters
        options = {
            name.removeprefix("ssl_"): self.kwargs.get(name, setting.default)
            for name, setting in settings.items()
            if name.startswith("ssl_")
        }
        return RedisSSLContext(**options).get()

    async def aclose(self) -> None:
        """Close the connection (its waiters fail) and wait until its socket is closed."""
        self.closing = True
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
            with contextlib.suppress(BaseException):
                await self.connecting
        guard, self.guard = self.guard, None
        if guard is not None:
            await guard.aclose()
        await self._close_protocol()

    async def _close_protocol(self) -> None:
        protocol = self.protocol
        if protocol is None or protocol.transport is None:
            return
        if protocol.generation != _GENERATION[0]:  # the parent's: leave it alone
            protocol.disown()
            return
        if protocol.lost is None:
            protocol.lost = _connection_error("the Redis connection is closed")
        self.forget(protocol)  # a command from now on opens another (unless closing)
        protocol.transport.close()
        await protocol.closed


async def _until_loop_ends(wire: Wire) -> AsyncIterator[None]:
    """Started once per wire on its loop, never resumed: when the loop shuts down
    (``asyncio.run`` finalizes the async generators it started), the connection is
    closed there, instead of lingering until the garbage collector finds it."""
    try:
        yield
    finally:
        # Other generators finalized with this one may still use the connection: it
        # closes once idle (a connection opened after this closes once idle too).
        wire.late = True
        protocol = wire.protocol
        if protocol is not None and not protocol.waiters:
            await wire._close_protocol()


_REGISTRIES: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()


#: Every connection of this process (a forked child blanks its copies of their sockets).
_PROTOCOLS: weakref.WeakSet[_Protocol] = weakref.WeakSet()


def _forget_after_fork() -> None:
    """In a forked child: no wire of the parent's is used again, and the child's copies
    of their sockets become ``/dev/null``, so a child still running the inherited loop
    (whose selector shares the parent's epoll registrations) never reads the parent's
    replies, and closing them never unregisters the parent's sockets."""
    _GENERATION[0] += 1
    for registry in list(_REGISTRIES):
        registry.forget_all()
    protocols = [protocol for protocol in list(_PROTOCOLS) if protocol.transport is not None]
    _PROTOCOLS.clear()
    if not protocols:
        return
    blank = os.open(os.devnull, os.O_RDWR)
    try:
        for protocol in protocols:
            sock = protocol.transport.get_extra_info("socket")  # type: ignore[union-attr]
            fd = sock.fileno() if sock is not None else -1
            if fd >= 0 and fd != blank:
                with contextlib.suppress(OSError):
                    os.dup2(blank, fd)
    finally:
        os.close(blank)


os.register_at_fork(after_in_child=_forget_after_fork)


class _PerLoopItem(Protocol):
    loop: asyncio.AbstractEventLoop

    async def aclose(self) -> None: ...


T = TypeVar("T", bound=_PerLoopItem)


class PerLoop(Generic[T]):
    """One ``make()`` per event loop (a :class:`Wire`, or something holding one), made
    on first use in that loop; the items of loops that have ended are dropped.

    A forked child starts with none: the parent's sockets are the parent's, and a lock
    held at the fork would stay held.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self.make = make
        self.forget_all()
        _REGISTRIES.add(self)

    def forget_all(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, T] = {}
        self._lock = threading.Lock()
        self._last: T | None = None

    def get(self) -> T:
        """The running event loop's item (each loop has its own)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last.loop is loop:
            return last
        with self._lock:
            item = self._items.get(loop)
            if item is None:
                for gone in [other for other in self._items if other.is_closed()]:
                    del self._items[gone]  # its loop ended: so did its connection's use
                item = self._items[loop] = self.make()
        self._last = item
        return item

    async def aclose(self) -> None:
        """Close the running loop's item; another loop's is closed from that loop (a
        transport belongs to its loop), and the next use makes a new one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.pop(loop, None)
            if self._last is item:
                self._last = None
        if item is not None:
            await item.aclose()


def loop_wires(pool: Any, timeout: float | None) -> PerLoop[Wire]:
    """One :class:`Wire` per event loop, addressed like ``pool`` (a redis-py async pool
    :func:`unsupported` accepts), each reply bounded by ``timeout`` seconds."""
    return PerLoop(lambda: Wire(pool, timeout))
