"""Lease renewal for the first runs in progress: one timer per event loop for all of them.

A first run holds its key for ``lease`` seconds and renews it every third of that while
the handler runs, so a long request is never taken for a dead one.  Most requests end
long before their first renewal; for them holding and dropping a lease is a dict insert
and a pop.  The loop's one timer fires at the earliest renewal due, renews what is due,
and is set again for the next (or not at all when no run is left).
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Protocol

from safeship.idempotency._errors import IdempotencyStoreError

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

    __slots__ = ("__weakref__", "_at", "_live", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._live: dict[Lease, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires

    def __len__(self) -> int:
        return len(self._live)

    def hold(
        self, store: Renews, key: str, token: str, *, lease: float, unknown_ttl: float
    ) -> Lease:
        """Renew ``key``'s lease every ``lease / 3`` seconds until :meth:`drop`."""
        held = Lease(store, key, token, lease, unknown_ttl, self.loop.time())
        self._live[held] = None
        if held.due < self._at:
            self._arm(held.due)
        return held

    def drop(self, held: Lease) -> None:
        """Stop renewing ``held`` (a renewal under way is cancelled).  The timer stays
        set: when it fires with nothing due it is set for the next renewal, or not."""
        self._live.pop(held, None)
        if held.task is not None:
            held.task.cancel()
            held.task = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = when
        self._timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._at = None, math.inf
        now, soonest = self.loop.time(), math.inf
        for held in self._live:
            if held.due <= now:
                held.due = now + held.every
                if held.task is None:  # one renewal at a time per lease
                    held.task = self.loop.create_task(self._renew(held))
            soonest = min(soonest, held.due)
        if soonest < math.inf:
            self._arm(soonest)

    async def _renew(self, held: Lease) -> None:
        try:
            alive = await held.store.renew(
                held.key, held.token, lease=held.lease, unknown_ttl=held.unknown_ttl
            )
        except IdempotencyStoreError as exc:
            _log.warning("idempotency.renew_failed", extra={"error": str(exc)})
            alive = True  # try again when the next renewal is due; the lease may still hold
        finally:
            held.task = None
        if not alive:
            _log.warning("idempotency.lease_lost", extra={"key_hash": held.key})
            self._live.pop(held, None)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Leases] = weakref.WeakKeyDictionary()
_last: Leases | None = None


def leases() -> Leases:
    """The running event loop's :class:`Leases`."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last.loop is loop:
        return last
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP.setdefault(loop, Leases(loop))
    _last = found
    return found
