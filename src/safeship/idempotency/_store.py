"""The key stores: what the middleware and the primitive ask, and the Redis store.

A store answers five atomic questions about one key: claim it (or say what it holds),
renew the claim's lease, finish it with a response, mark its outcome unknown, or let it
go.  Each change names the claim's token, so a request that lost its lease can never
overwrite the request that took over.  Expiry is the store's clock: Redis TTLs here,
the database's ``now()`` in :mod:`safeship.idempotency._sql`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from safeship._redis_wire import (
    PerLoop,
    ReplyError,
    Wire,
    bulk,
    bulks,
    pool_setting,
    response_error,
    unsupported,
)  # fmt: skip
from safeship.idempotency._errors import IdempotencyStoreError
from safeship.idempotency._model import Claim, Record, State, StoredResponse

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["UNKNOWN_TTL", "RedisStore", "Store", "fail_waiting", "new_token", "to_ms"]

T = TypeVar("T")

#: Seconds an unknown outcome holds its key before the key is released (default).
UNKNOWN_TTL = 300.0


def fail_waiting(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    """Every caller of a batch still waiting on its future learns ``exc`` (a cancellation
    cancels it); callers already answered or gone are left alone."""
    for future in futures:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)


def new_token() -> str:
    """A claim's owner token: 128 random bits, hex."""
    return secrets.token_hex(16)


@functools.lru_cache(maxsize=1024)  # a route's few durations, on every call
def to_ms(seconds: float, what: str) -> int:
    """``seconds`` as whole milliseconds (at least 1); a non-positive value is refused."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000))


class Store(Protocol):
    """What the HTTP middleware needs from a key store (all calls atomic).

    ``unknown_ttl``: how long an unknown outcome holds its key, by the store's clock.  A
    record in flight expires ``lease + unknown_ttl`` after its last claim or renewal (so
    a claim whose owner died says "unknown" for ``unknown_ttl``, then is released); a
    record marked unknown expires ``unknown_ttl`` after the mark; a finished one ``ttl``.
    """

    async def claim(
        self,
        key: str,
        fingerprint: str,
        *,
        lease: float,
        ttl: float,
        unknown_ttl: float = UNKNOWN_TTL,
    ) -> Claim:
        """Own ``key`` now (``Claim.token``) or learn what it holds (``Claim.existing``)."""
        ...

    async def renew(
        self, key: str, token: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> bool:
        """Extend a live claim's lease; False when the claim is no longer ours."""
        ...

    async def complete(self, key: str, token: str, response: StoredResponse, *, ttl: float) -> bool:
        """Store the claim's response, kept ``ttl`` seconds from now."""
        ...

    async def mark_unknown(self, key: str, token: str, *, unknown_ttl: float = UNKNOWN_TTL) -> bool:
        """Record that the claim's outcome is unknown (it raised or was cut off)."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """Forget the claim, so a corrected request may run (validation errors, conflicts)."""
        ...

    async def take_over(
        self, key: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> str | None:
        """Own a key whose outcome is unknown (to reconcile it); its new token, or None."""
        ...

    async def get(self, key: str) -> Record | None:
        """What ``key`` holds now, or None when it is free or expired."""
        ...


def _record_json(state: State, fingerprint: str, token: str | None, response: Any) -> str:
    return json.dumps({"st": state.value, "fp": fingerprint, "t": token, "r": response})


def _in_flight_json(fingerprint: str, token: str) -> str:
    """A claim's record: ``_record_json`` of an in-flight claim, formatted directly when
    the fingerprint needs no escaping (a hex digest, as the middleware's always is)."""
    if fingerprint.isascii() and fingerprint.isalnum():
        return f'{{"st": "in_flight", "fp": "{fingerprint}", "t": "{token}", "r": null}}'
    return _record_json(State.IN_FLIGHT, fingerprint, token, None)


def _decode(raw: bytes | str, lease_ms: int) -> Record:
    data = json.loads(raw)
    state = State(data["st"])
    retry_after = None
    if state is State.IN_FLIGHT:
        if lease_ms > 0:
            retry_after = lease_ms / 1000
        else:
            state = State.UNKNOWN  # its owner stopped renewing: crashed or cut off
    response = StoredResponse.decode(data["r"]) if data.get("r") else None
    return Record(state, data["fp"], response, retry_after)


# KEYS: record, lease.  ARGV: record json, record ms (lease + unknown), token, lease ms.
_CLAIM = """
local rec = redis.call('GET', KEYS[1])
if rec then return {0, rec, redis.call('PTTL', KEYS[2])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return {1}
"""
# The record is ours while it is in flight under our token.
_OURS = """
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
local d = cjson.decode(rec)
if d.st ~= 'in_flight' or d.t ~= ARGV[1] then return 0 end
"""
_RENEW = (
    _OURS
    + """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
_COMPLETE = (
    _OURS
    + """
d.st = 'done'
d.t = false
d.r = cjson.decode(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(d), 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""
)
_UNKNOWN = (
    _OURS
    + """
d.st = 'unknown'
d.t = false
redis.call('SET', KEYS[1], cjson.encode(d), 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
)
_RELEASE = _OURS + "redis.call('DEL', KEYS[1], KEYS[2]) return 1"
_TAKE_OVER = """
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
local d = cjson.decode(rec)
if d.st == 'done' then return 0 end
if d.st == 'in_flight' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
d.st = 'in_flight'
d.t = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(d), 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
_GET = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[2])}"

#: How many ARGV each script takes per key: a batch's arguments are these, item after item.
_ARITY = {
    "claim": 4,
    "renew": 3,
    "complete": 3,
    "unknown": 2,
    "release": 1,
    "take_over": 3,
    "get": 0,
}


def _for_many(body: str) -> str:
    """``body`` (one key's script over KEYS[1..2], ARGV[1..n]) run for every key of a
    call: KEYS hold two names per item, ARGV[1] is n, then each item's n arguments.  The
    call answers one reply per item, in order; an item that fails answers its error and
    the others go on (each item is atomic alone, as a script of its own is)."""
    return f"""
local function item(KEYS, ARGV)
{body}
end
local n, out = tonumber(ARGV[1]), {{}}
for i = 0, #KEYS / 2 - 1 do
  local args = {{}}
  for j = 1, n do args[j] = ARGV[1 + i * n + j] end
  local ok, res = pcall(item, {{KEYS[2 * i + 1], KEYS[2 * i + 2]}}, args)
  if ok then
    out[i + 1] = res
  elseif type(res) == 'table' and res.err then  -- an error of redis.call, as it came
    out[i + 1] = res
  else
    out[i + 1] = redis.error_reply(tostring(res))
  end
end
return out
"""


_SOURCES = {
    name: _for_many(source)
    for name, source in {
        "claim": _CLAIM,
        "renew": _RENEW,
        "complete": _COMPLETE,
        "unknown": _UNKNOWN,
        "release": _RELEASE,
        "take_over": _TAKE_OVER,
        "get": _GET,
    }.items()
}
_SHAS = {
    name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for name, source in _SOURCES.items()
}

#: One queued call: (script name, its two keys and its arguments packed, the caller's future).
_Call = tuple[str, bytes, bytes, asyncio.Future[Any]]
#: One script call of a batch: (name, its items' packed keys, packed arguments, futures).
_Group = tuple[str, list[bytes], list[bytes], list[asyncio.Future[Any]]]
_EVALSHA, _EVAL = bulk("EVALSHA"), bulk("EVAL")
_ARITY_BULK = {name: bulk(arity) for name, arity in _ARITY.items()}


class _Batch:
    """One event loop's side of a store: its connection, the calls gathered for the
    turn's write, and the writes whose replies are awaited."""

    __slots__ = ("loop", "pending", "sending", "wire")

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.loop = wire.loop
        self.pending: list[_Call] = []
        self.sending: set[asyncio.Future[Any]] = set()

    async def aclose(self) -> None:
        await self.wire.aclose()


class RedisStore:
    """Keys in Redis (``redis.asyncio``): a record with the key's TTL and a lease beside it.

    ``prefix`` namespaces the keys; both keys of one record share a hash tag, so the
    scripts work on Redis Cluster too.  A claim is one round trip, and so is finishing it.

    Calls go on the store's own pipelined connection per event loop
    (:mod:`safeship._redis_wire`, addressed like the client's pool, each reply bounded by
    the pool's ``socket_timeout``).  A call made while nothing of the store's is in
    flight goes at once; the calls made while something is (concurrent requests) gather
    for the rest of the event-loop turn and travel together: one script call per kind of
    call (all of the turn's claims in one, its completes in another; not a transaction:
    each item stays atomic alone, and each caller awaits its own answer) in one write, so
    a busy server pays one round trip per turn instead of one per call, and an idle one
    waits for no turn to end.  A client that connection cannot dial the same way
    (Redis Cluster, Sentinel, a credential provider) sends each call on its own through
    redis-py.  :meth:`aclose` closes the running loop's connection (not the client).
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "safeship:idem:") -> None:
        if not prefix:
            raise ValueError("prefix must be non-empty, so safeship's keys stay apart")
        self._client = client
        self._prefix = prefix
        self._batches = _batches(client)
        self._batching = self._batches is not None
        self._shas = dict(_SHAS)
        self._scripts = {name: client.register_script(source) for name, source in _SOURCES.items()}

    def _keys(self, key: str) -> list[str]:
        record = f"{self._prefix}{{{key}}}"
        return [record, record + ":lease"]

    async def aclose(self) -> None:
        """Close the store's connection of the running event loop (the client given to
        it is the caller's to close); the next call opens a new one."""
        if self._batches is not None:
            await self._batches.aclose()

    async def _run(self, name: str, key: str, *args: str | int) -> Any:
        if not self._batching:  # one item per call: its two keys share a slot
            keys = self._keys(key)
            script = self._scripts[name]
            (answer,) = await _guarded(lambda: script(keys=keys, args=[len(args), *args]))
            if isinstance(answer, Exception):
                raise answer
            return answer
        batch = self._batches.get()  # type: ignore[union-attr]  # batching implies batches
        future: asyncio.Future[Any] = batch.loop.create_future()
        record = f"{self._prefix}{{{key}}}".encode()
        packed_keys = b"$%d\r\n%b\r\n$%d\r\n%b:lease\r\n" % (
            len(record), record, len(record) + 6, record,
        )  # fmt: skip
        item = (name, packed_keys, bulks(args), future)
        if not batch.sending and not batch.pending:  # nothing in flight: go at once
            self._submit(batch, [(name, [packed_keys], [item[2]], [future])], evalsha=True)
            return await future
        if not batch.pending:  # the first call of this turn sends the turn's batch
            batch.loop.call_soon(self._flush, batch)
        batch.pending.append(item)
        return await future

    def _flush(self, batch: _Batch) -> None:
        """Send the turn's calls: one script call per kind of call, written together."""
        queued, batch.pending = batch.pending, []
        groups: dict[str, tuple[list[bytes], list[bytes], list[asyncio.Future[Any]]]] = {}
        for name, keys, args, future in queued:
            if future.done():  # its caller is gone: not sent
                continue
            group = groups.get(name)
            if group is None:
                group = groups[name] = ([], [], [])
            group[0].append(keys)
            group[1].append(args)
            group[2].append(future)
        if groups:
            calls = [(name, keys, args, futures) for name, (keys, args, futures) in groups.items()]
            self._submit(batch, calls, evalsha=True)

    def _submit(self, batch: _Batch, calls: list[_Group], *, evalsha: bool) -> None:
        """Write ``calls`` (as ``EVALSHA``, or as ``EVAL`` with the source) in one go; each
        caller learns its own answer when the replies come back."""
        parts: list[bytes] = []
        for name, keys, args, _ in calls:
            items = len(keys)
            script = bulk(self._shas[name]) if evalsha else bulk(_SOURCES[name])
            parts += (
                b"*%d\r\n" % (4 + items * (2 + _ARITY[name])),
                _EVALSHA if evalsha else _EVAL, script, bulk(2 * items), *keys,
                _ARITY_BULK[name], *args,
            )  # fmt: skip
        try:
            replies = batch.wire.submit(b"".join(parts), len(calls))
        except Exception as exc:  # noqa: BLE001 -- the connection is gone: every caller learns
            fail_waiting((f for *_, futures in calls for f in futures), _store_error(exc))
            return
        batch.sending.add(replies)
        replies.add_done_callback(functools.partial(self._deliver, batch, calls, evalsha))

    def _deliver(
        self, batch: _Batch, calls: list[_Group], evalsha: bool, replies: asyncio.Future[Any]
    ) -> None:
        batch.sending.discard(replies)
        waiting = (f for *_, futures in calls for f in futures)
        if replies.cancelled():  # the connect was stopped (the store was closed)
            fail_waiting(waiting, _store_error(asyncio.CancelledError()))
            return
        error = replies.exception()
        if error is not None and not (len(calls) == 1 and _is_reply(error)):
            fail_waiting(waiting, _store_error(error))
            return
        answers = [error] if error is not None else replies.result()
        if len(calls) == 1 and error is None:
            answers = [answers]
        lost: list[_Group] = []
        for call, reply in zip(calls, answers, strict=True):
            futures = call[3]
            if isinstance(reply, Exception):
                if evalsha and str(reply).startswith("NOSCRIPT"):
                    lost.append(call)  # a restarted or flushed server: send the source
                    continue
                fail_waiting(futures, _as_response_error(reply))
                continue
            for future, answer in zip(futures, reply, strict=True):
                if future.done():  # its caller was cancelled; the call itself ran
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(_as_response_error(answer))
                else:
                    future.set_result(answer)
        if lost:
            self._submit(batch, lost, evalsha=False)

    async def claim(
        self,
        key: str,
        fingerprint: str,
        *,
        lease: float,
        ttl: float,
        unknown_ttl: float = UNKNOWN_TTL,
    ) -> Claim:
        token = new_token()
        record = _in_flight_json(fingerprint, token)
        lease_ms, unknown_ms = to_ms(lease, "lease"), to_ms(unknown_ttl, "unknown_ttl")
        to_ms(ttl, "ttl")  # checked here; it applies once the response is stored
        answer = await self._run("claim", key, record, lease_ms + unknown_ms, token, lease_ms)
        if int(answer[0]) == 1:
            return Claim(token)
        return Claim(None, _decode(answer[1], int(answer[2])))

    async def renew(
        self, key: str, token: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> bool:
        lease_ms, unknown_ms = to_ms(lease, "lease"), to_ms(unknown_ttl, "unknown_ttl")
        return bool(await self._run("renew", key, token, lease_ms, lease_ms + unknown_ms))

    async def complete(self, key: str, token: str, response: StoredResponse, *, ttl: float) -> bool:
        encoded = json.dumps(response.encode())
        return bool(await self._run("complete", key, token, encoded, to_ms(ttl, "ttl")))

    async def mark_unknown(self, key: str, token: str, *, unknown_ttl: float = UNKNOWN_TTL) -> bool:
        return bool(await self._run("unknown", key, token, to_ms(unknown_ttl, "unknown_ttl")))

    async def release(self, key: str, token: str) -> bool:
        return bool(await self._run("release", key, token))

    async def take_over(
        self, key: str, *, lease: float, unknown_ttl: float = UNKNOWN_TTL
    ) -> str | None:
        token = new_token()
        lease_ms, unknown_ms = to_ms(lease, "lease"), to_ms(unknown_ttl, "unknown_ttl")
        taken = await self._run("take_over", key, token, lease_ms, lease_ms + unknown_ms)
        return token if int(taken) == 1 else None

    async def get(self, key: str) -> Record | None:
        raw, lease_ms = await self._run("get", key)
        return None if raw is None else _decode(raw, int(lease_ms))


def _batches(client: Any) -> PerLoop[_Batch] | None:
    """The store's own connection per event loop for ``client``: a plain
    ``redis.asyncio.Redis`` whose pool the wire can dial (each reply bounded by the pool's
    ``socket_timeout``, redis-py's default when not given); None for a Cluster client
    (its calls route per slot) or a pool that finds its server or signs in another way."""
    import redis.asyncio

    if not isinstance(client, redis.asyncio.Redis):
        return None
    pool = client.connection_pool
    if unsupported(pool) is not None:
        return None
    timeout = pool_setting(pool, "socket_timeout")
    return PerLoop(lambda: _Batch(Wire(pool, timeout)))


def _is_reply(error: BaseException) -> bool:
    """Whether ``error`` is the server's error reply (not a lost or timed-out link)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    return isinstance(error, ResponseError) and not isinstance(error, RedisConnectionError)


def _as_response_error(reply: Exception) -> Exception:
    return response_error(reply) if isinstance(reply, ReplyError) else reply


def _store_error(exc: BaseException) -> BaseException:
    """A connection failure or timeout as IdempotencyStoreError; others as they are."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, asyncio.CancelledError):
        return IdempotencyStoreError("the Redis key store was closed")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        error = IdempotencyStoreError(f"the Redis key store did not answer: {exc}")
        error.__cause__ = exc
        return error
    return exc


async def _guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call; a connection failure or timeout becomes IdempotencyStoreError."""
    try:
        return await call()
    except Exception as exc:
        error = _store_error(exc)
        if error is exc:
            raise
        raise error from exc
