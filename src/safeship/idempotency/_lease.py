"""Lease renewal for the first runs in progress: one timer per event loop for all of them.

A first run holds its key for ``lease`` seconds and renews it every third of that while
the handler runs, so a long request is never taken for a dead one.  Most requests end
long before their first renewal; for them holding and dropping a lease is a dict insert
and a pop.  The loop's one timer fires at the earliest renewal due and renews every lease
due within a quarter of its period (a little early, never late), so however the runs'
start times spread, it fires at most about four times per period and each firing is one
pass over the runs in flight.  Nothing here holds its event loop alive: a loop that ends
takes its leases and its timer with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Protocol

__all__ = ["Lease", "Leases", "Renews", "leases"]

_log = logging.getLogger("safeship.idempotency")


class Renews(Protocol):
    """The part of a key store a lease needs (every :class:`~safeship.idempotency.Store`)."""

    async def renew(self, key: str, token: str, *, lease: float, unknown_ttl: float) -> bool: ...


class Lease:
    """One first run's hold on its key (:meth:`Leases.hold` makes it)."""

    __slots__ = ("due", "every", "key", "lease", "store", "task", "token", "unknown_ttl")

    def __init__(
        self, store: Renews, key: str, token: str, lease: float, unknown_ttl: float, due: float
    ) -> None:
        self.store, self.key, self.token = store, key, token
        self.lease, self.unknown_ttl = lease, unknown_ttl
        self.every = lease / 3
        self.due = due + self.every  # loop time of the next renewal
        self.task: asyncio.Task[None] | None = None  # a renewal under way


class Leases:
    """The leases held in one event loop, renewed by one timer."""

    __slots__ = ("__weakref__", "_at", "_live", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop's timers hold this object, not it the loop
        self._live: dict[Lease, None] = {}  # insertion-ordered set
        self._at = math.inf  # when the timer that counts fires (an earlier one is stale)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    def __len__(self) -> int:
        return len(self._live)

    def hold(
        self, store: Renews, key: str, token: str, *, lease: float, unknown_ttl: float
    ) -> Lease:
        """Renew ``key``'s lease every ``lease / 3`` seconds until :meth:`drop`."""
        loop = self._loop()
        assert loop is not None  # called from its running loop
        held = Lease(store, key, token, lease, unknown_ttl, loop.time())
        self._live[held] = None
        if held.due < self._at:
            self._arm(loop, held.due)
        return held

    def drop(self, held: Lease) -> None:
        """Stop renewing ``held`` (a renewal under way is cancelled).  The timer is left:
        when it fires with nothing due it is set for the next renewal, or not at all."""
        self._live.pop(held, None)
        task, held.task = held.task, None
        if task is not None:
            task.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._at = when  # a timer set before for a later time finds itself stale
        loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        loop = self._loop()
        if when != self._at or loop is None:  # superseded by a sooner renewal
            return
        self._at = math.inf
        now, soonest = loop.time(), math.inf
        for held in list(self._live):  # a renewal run at once may drop a lease
            if held.due <= now + held.every / 4:
                held.due = now + held.every
                if held.task is None:  # one renewal at a time per lease
                    task = loop.create_task(self._renew(held))
                    if not task.done():  # (an eager task may have finished already)
                        held.task = task
            soonest = min(soonest, held.due)
        if soonest < self._at:
            self._arm(loop, soonest)

    async def _renew(self, held: Lease) -> None:
        try:
            alive = await held.store.renew(
                held.key, held.token, lease=held.lease, unknown_ttl=held.unknown_ttl
            )
        except Exception as exc:  # noqa: BLE001 -- a store error or a refused reply: try again
            _log.warning("idempotency.renew_failed", extra={"error": repr(exc)})
            alive = True  # try again when the next renewal is due; the lease may still hold
        finally:
            held.task = None
        if not alive:
            _log.warning("idempotency.lease_lost", extra={"key_hash": held.key})
            self._live.pop(held, None)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Leases] = weakref.WeakKeyDictionary()
_last: weakref.ref[Leases] | None = None  # the last loop's, without holding it


def leases() -> Leases:
    """The running event loop's :class:`Leases`."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last() if _last is not None else None
    if last is not None and last._loop() is loop:
        return last
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP.setdefault(loop, Leases(loop))
    _last = weakref.ref(found)
    return found
