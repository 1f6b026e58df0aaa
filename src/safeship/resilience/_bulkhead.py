"""Bulkhead: cap how many calls run at once, so one slow dependency cannot take every
worker thread or flood the event loop.

``Bulkhead(max_concurrent=N, max_queued=Q, max_wait=S)`` lets N calls run; up to Q more
wait (first come, first served) for at most S seconds each; anything beyond is rejected
at once with :class:`~safeship.resilience.BulkheadFull`. One bulkhead serves threads and
asyncio tasks together: a freed slot is handed straight to the oldest waiter, whichever
kind it is, so a waiter never loses its turn to a newcomer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from safeship.resilience._errors import BulkheadFull
from safeship.resilience._policy import Guard, GuardedPolicy

__all__ = ["Bulkhead"]

P = ParamSpec("P")
R = TypeVar("R")
_WAITING, _GRANTED, _ABANDONED = 0, 1, 2


class _Waiter:
    __slots__ = ("state", "wake")

    def __init__(self, wake: Callable[[], object]) -> None:
        self.state = _WAITING
        self.wake = wake


class Bulkhead(GuardedPolicy):
    """At most ``max_concurrent`` calls at once, ``max_queued`` more waiting ``max_wait`` s."""

    __slots__ = ("_active", "_lock", "_waiters", "max_concurrent", "max_queued", "max_wait", "name")

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_queued: int = 0,
        max_wait: float = 1.0,
        name: str = "bulkhead",
    ) -> None:
        _check_int("max_concurrent", max_concurrent, 1)
        _check_int("max_queued", max_queued, 0)
        if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or max_wait < 0:
            raise ValueError(
                f"Bulkhead.max_wait must be a number of seconds >= 0, got {max_wait!r}"
            )
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait = float(max_wait)
        self.name = name
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"<Bulkhead {self.name!r} {self._active}/{self.max_concurrent} running>"

    @property
    def active(self) -> int:
        """Calls holding a slot right now."""
        return self._active

    @property
    def queued(self) -> int:
        """Callers waiting for a slot right now."""
        return len(self._waiters)

    def _enter(self, make_waiter: Callable[[], _Waiter]) -> _Waiter | None:
        """Take a slot (None) or join the queue (the waiter); raise when the queue is full."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return None
            if len(self._waiters) < self.max_queued:
                waiter = make_waiter()
                self._waiters.append(waiter)
                return waiter
        raise BulkheadFull(self.name, None)

    def _abandon(self, waiter: _Waiter) -> bool:
        """Leave the queue after a timeout; True if a slot was granted meanwhile."""
        with self._lock:
            if waiter.state == _GRANTED:
                return True
            waiter.state = _ABANDONED
            self._waiters.remove(waiter)
            return False

    def acquire(self) -> None:
        """Take a slot, waiting up to ``max_wait`` in the queue; raise BulkheadFull."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
        self._acquire_queued()

    def _acquire_queued(self) -> None:
        signal = threading.Lock()
        signal.acquire()
        waiter = self._enter(lambda: _Waiter(signal.release))
        if waiter is None or signal.acquire(timeout=self.max_wait):
            return
        if not self._abandon(waiter):
            raise BulkheadFull(self.name, None)

    async def acquire_async(self) -> None:
        """The async twin of :meth:`acquire`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = self._enter(lambda: _Waiter(lambda: loop.call_soon_threadsafe(_resolve, future)))
        if waiter is None:
            return
        try:
            await asyncio.wait_for(future, self.max_wait)
        except TimeoutError:
            if not self._abandon(waiter):
                raise BulkheadFull(self.name, None) from None
        except asyncio.CancelledError:
            if self._abandon(waiter):
                self.release()
            raise

    def release(self) -> None:
        """Free a slot, handing it to the oldest waiter if there is one."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.state == _WAITING:
                    waiter.state = _GRANTED
                    break
            else:
                self._active -= 1
                return
        waiter.wake()

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Run ``fn`` holding a slot."""
        acquire, release = self.acquire, self.release

        def bulkhead_call(*args: P.args, **kwargs: P.kwargs) -> R:
            acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                release()

        return bulkhead_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Await ``fn`` holding a slot (no await at all when a slot is free)."""
        lock, release = self._lock, self.release

        async def bulkhead_call(*args: P.args, **kwargs: P.kwargs) -> R:
            with lock:
                free = self._active < self.max_concurrent and not self._waiters
                if free:
                    self._active += 1
            if not free:
                await self.acquire_async()
            try:
                return await fn(*args, **kwargs)
            finally:
                release()

        return bulkhead_call

    def guard(self) -> Guard:
        """A single-use context manager holding a slot for one block."""
        return _BulkheadGuard(self)


class _BulkheadGuard:
    __slots__ = ("bulkhead",)

    def __init__(self, bulkhead: Bulkhead) -> None:
        self.bulkhead = bulkhead

    def __enter__(self) -> None:
        self.bulkhead.acquire()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bulkhead.release()

    async def __aenter__(self) -> None:
        await self.bulkhead.acquire_async()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bulkhead.release()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _check_int(field: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1_000_000:
        raise ValueError(f"Bulkhead.{field} must be an int from {low} to 1000000, got {value!r}")
