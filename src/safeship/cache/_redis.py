"""The Redis tier: envelopes, tags, the cross-process lease and the pub/sub listener.

One channel per ``env:namespace`` carries three messages: ``done`` (a lease holder stored
a value: its waiters read it), ``keys`` and ``tags`` (invalidations: every process drops
the matching entries of its memory tier). Waiters for a lease block on an event the
listener sets, never on a polling loop; a waiter that times out (the holder died) tries
the lease again. Sync and async clients are twins sharing the same commands: the sync
ones run on the redis-py client, the async ones on the event loop's :class:`Wire` (one
pipelined connection per loop, addressed like the async client's pool); the pub/sub
subscriptions use the redis-py clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

from safeship._redis_wire import Wire, loop_wires
from safeship.cache._entry import Entry, decode_envelope, encode_envelope
from safeship.cache._errors import CacheError
from safeship.cache._keys import KeySpace

__all__ = ["AsyncListener", "RedisTier", "SyncListener"]

logger = logging.getLogger("safeship.cache")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
#: Extends the lease only while this holder's token is still in it (a lease that expired
#: and went to another process is not taken back).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_DROP_TAGS = """
local n = 0
for _, tag in ipairs(KEYS) do
  for _, key in ipairs(redis.call('SMEMBERS', tag)) do n = n + redis.call('DEL', key) end
  redis.call('DEL', tag)
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
"""
_DROP_KEYS = """
local n = redis.call('DEL', unpack(KEYS))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
"""


def parse_message(data: Any, own: str) -> tuple[str, list[str]] | None:
    """(op, items) of a channel message; None when it is not ours, or is an invalidation
    this process sent (it already dropped those entries itself)."""
    try:
        message = json.loads(data)
        op, items, origin = message["op"], message["items"], message.get("from")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if op not in ("done", "keys", "tags") or not isinstance(items, list):
        return None
    if op != "done" and origin == own:
        return None
    return op, [str(item) for item in items]


class RedisTier:
    """Commands of the Redis tier for one key space; ``client`` sync, ``aclient`` async."""

    def __init__(
        self, space: KeySpace, *, client: Any, aclient: Any, lease_ttl: float,
        command_seconds: float | None = None,
    ) -> None:  # fmt: skip
        self.space = space
        self.client = client
        self.aclient = aclient
        #: Seconds an async command may wait for its reply (None: no bound).
        self.command_seconds = command_seconds
        self._wires = (
            None if aclient is None else loop_wires(aclient.connection_pool, command_seconds)
        )
        self.lease_ms = max(1, round(lease_ttl * 1000))
        self.channel = f"safeship:cache:{space.env}:{space.namespace}"
        self.token = secrets.token_hex(8)

    def message(self, op: str, items: Iterable[str]) -> str:
        body = {"op": op, "items": list(items), "from": self.token}
        return json.dumps(body, separators=(",", ":"))

    # -- pure pieces shared by the twins ------------------------------------------------
    def parse(self, key: str, data: bytes | None, loads: Callable[[bytes], Any]) -> Entry | None:
        if data is None:
            return None
        stored, expires, stale_until, delta, tags, payload = decode_envelope(data)
        if stored != key:
            raise CacheError("the Redis value names another key; treated as a miss")
        return Entry(
            key, loads(payload), expires=expires, stale_until=stale_until, delta=delta,
            beta=0.0, tags=tags,
        )  # fmt: skip

    def _ttl_ms(self, entry: Entry, now: float) -> int:
        return max(1, round((entry.stale_until - now) * 1000))

    def lease_key(self, key: str) -> str:
        return "lease:" + key

    # -- sync --------------------------------------------------------------------------
    def get(self, key: str, loads: Callable[[bytes], Any]) -> Entry | None:
        return self.parse(key, self.client.get(key), loads)

    def put(self, entry: Entry, payload: bytes, now: float, announce: bool = False) -> None:
        ttl = self._ttl_ms(entry, now)
        pipe = self.client.pipeline(transaction=False)
        if announce:
            pipe.publish(self.channel, self.message("keys", [entry.key]))
        pipe.set(entry.key, encode_envelope(entry, payload), px=ttl)
        for tag in entry.tags:
            tag_key = self.space.tag_key(tag)
            pipe.sadd(tag_key, entry.key)
            pipe.pexpire(tag_key, ttl, gt=True)
            pipe.pexpire(tag_key, ttl, nx=True)
        pipe.execute()

    def drop_keys(self, keys: list[str]) -> int:
        return int(
            self.client.eval(_DROP_KEYS, len(keys), *keys, self.channel, self.message("keys", keys))
        )

    def drop_tags(self, tags: list[str]) -> int:
        names = [self.space.tag_key(tag) for tag in tags]
        return int(
            self.client.eval(
                _DROP_TAGS, len(names), *names, self.channel, self.message("tags", tags)
            )
        )

    def acquire(self, key: str) -> bool:
        return bool(self.client.set(self.lease_key(key), self.token, nx=True, px=self.lease_ms))

    def release(self, key: str) -> None:
        self.client.eval(
            _RELEASE, 1, self.lease_key(key), self.token, self.channel, self.message("done", [key])
        )

    def renew(self, key: str) -> bool:
        """Extend this holder's lease by ``lease_ttl``; False when it is no longer ours."""
        return bool(self.client.eval(_RENEW, 1, self.lease_key(key), self.token, self.lease_ms))

    # -- async -------------------------------------------------------------------------
    def wire(self) -> Wire:
        """The running event loop's connection (each loop has its own)."""
        if self._wires is None:
            raise CacheError("this cache has no async Redis client")
        return self._wires.get()

    async def aclose_wire(self) -> None:
        """Close the running loop's connection (see :meth:`PerLoop.aclose`)."""
        if self._wires is not None:
            await self._wires.aclose()

    async def aget(self, key: str, loads: Callable[[bytes], Any]) -> Entry | None:
        return self.parse(key, await self.wire().execute(("GET", key)), loads)

    async def aput(self, entry: Entry, payload: bytes, now: float, announce: bool = False) -> None:
        ttl = self._ttl_ms(entry, now)
        commands: list[tuple[Any, ...]] = []
        if announce:
            commands.append(("PUBLISH", self.channel, self.message("keys", [entry.key])))
        commands.append(("SET", entry.key, encode_envelope(entry, payload), "PX", ttl))
        for tag in entry.tags:
            tag_key = self.space.tag_key(tag)
            commands.append(("SADD", tag_key, entry.key))
            commands.append(("PEXPIRE", tag_key, ttl, "GT"))
            commands.append(("PEXPIRE", tag_key, ttl, "NX"))
        await self.wire().execute(*commands)

    async def adrop_keys(self, keys: list[str]) -> int:
        message = self.message("keys", keys)
        command = ("EVAL", _DROP_KEYS, len(keys), *keys, self.channel, message)
        return int(await self.wire().execute(command))

    async def adrop_tags(self, tags: list[str]) -> int:
        names = [self.space.tag_key(tag) for tag in tags]
        message = self.message("tags", tags)
        command = ("EVAL", _DROP_TAGS, len(names), *names, self.channel, message)
        return int(await self.wire().execute(command))

    async def aacquire(self, key: str) -> bool:
        command = ("SET", self.lease_key(key), self.token, "NX", "PX", self.lease_ms)
        return await self.wire().execute(command) is not None

    async def arenew(self, key: str) -> bool:
        """Extend this holder's lease by ``lease_ttl``; False when it is no longer ours."""
        command = ("EVAL", _RENEW, 1, self.lease_key(key), self.token, self.lease_ms)
        return bool(await self.wire().execute(command))

    async def arelease(self, key: str) -> None:
        message = self.message("done", [key])
        command = ("EVAL", _RELEASE, 1, self.lease_key(key), self.token, self.channel, message)
        await self.wire().execute(command)


Handler = Callable[[str, list[str]], None]


class AsyncListener:
    """One pub/sub subscription per cache and event loop: wakes lease waiters and passes
    invalidations to ``on_message``. After a lost subscription it calls ``on_gap`` (the
    memory tier may have missed invalidations, so it is cleared) and subscribes again."""

    def __init__(self, tier: RedisTier, on_message: Handler, on_gap: Callable[[], None]) -> None:
        self.tier = tier
        self.on_message = on_message
        self.on_gap = on_gap
        self.ready = asyncio.Event()
        self.ever_ready = False
        # Set by the first subscription attempt's outcome; ``failing`` while Redis refuses.
        self.tried = asyncio.Event()
        self.failing = False
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def wait_ready(self, seconds: float, *, through_failures: bool = False) -> bool:
        """Whether the subscription is up: waits up to ``seconds`` for an attempt's
        outcome, and not at all while the last attempt failed (Redis is down); with
        ``through_failures`` (start-up), for the subscription itself, retries included."""
        self.start()
        if not self.ready.is_set() and (through_failures or not self.failing):
            with contextlib.suppress(TimeoutError):
                event = self.ready if through_failures else self.tried
                await asyncio.wait_for(event.wait(), seconds)
        return self.ready.is_set()

    def waiter(self, key: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, set()).add(future)
        return future

    def forget(self, key: str, future: asyncio.Future[None]) -> None:
        futures = self.waiters.get(key)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self.waiters[key]

    def _dispatch(self, data: Any) -> None:
        parsed = parse_message(data, self.tier.token)
        if parsed is None:
            return
        op, items = parsed
        if op == "done":
            for key in items:
                for future in self.waiters.pop(key, ()):
                    if not future.done():
                        future.set_result(None)
        else:
            self.on_message(op, items)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            pubsub = self.tier.aclient.pubsub()
            try:
                await pubsub.subscribe(self.tier.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.ready.set()
                        self.ever_ready, self.failing = True, False
                        self.tried.set()
                        delay = 0.05
                    elif message["type"] == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any loss of the feed means a gap
                # Before any await: the memory tier stops serving what it may have missed.
                self.ready.clear()
                self.on_gap()
                logger.warning("cache.subscription_lost", extra={"error": repr(exc)})
                self.failing = True
                self.tried.set()
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None


class SyncListener:
    """The thread twin of :class:`AsyncListener`, for sync clients."""

    def __init__(self, tier: RedisTier, on_message: Handler, on_gap: Callable[[], None]) -> None:
        self.tier = tier
        self.on_message = on_message
        self.on_gap = on_gap
        self.ready = threading.Event()
        self.ever_ready = False
        self.tried = threading.Event()  # as in AsyncListener
        self.failing = False
        self.waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"safeship-cache-{self.tier.channel}", daemon=True
                )
                self._thread.start()

    def wait_ready(self, timeout: float, *, through_failures: bool = False) -> bool:
        """As :meth:`AsyncListener.wait_ready`."""
        self.start()
        if not self.ready.is_set() and (through_failures or not self.failing):
            (self.ready if through_failures else self.tried).wait(timeout)
        return self.ready.is_set()

    def waiter(self, key: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self.waiters.setdefault(key, set()).add(event)
        return event

    def forget(self, key: str, event: threading.Event) -> None:
        with self._lock:
            events = self.waiters.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self.waiters[key]

    def _dispatch(self, data: Any) -> None:
        parsed = parse_message(data, self.tier.token)
        if parsed is None:
            return
        op, items = parsed
        if op == "done":
            with self._lock:
                woken = [event for key in items for event in self.waiters.pop(key, ())]
            for event in woken:
                event.set()
        else:
            self.on_message(op, items)

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            pubsub = self.tier.client.pubsub()
            try:
                pubsub.subscribe(self.tier.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.ready.set()
                        self.ever_ready, self.failing = True, False
                        self.tried.set()
                        delay = 0.05
                    elif message["type"] == "message":
                        self._dispatch(message["data"])
            except Exception as exc:  # noqa: BLE001 - any loss of the feed means a gap
                self.ready.clear()  # before the close, as in AsyncListener
                self.on_gap()
                logger.warning("cache.subscription_lost", extra={"error": repr(exc)})
                self.failing = True
                self.tried.set()
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    pubsub.close()
            self.on_gap()  # also when stopped: a later start must not trust the memory tier
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2.0)
        self._thread = None
