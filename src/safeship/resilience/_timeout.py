"""Timeouts: asyncio-native cancellation for coroutines, a deadline for plain functions.

**Async.** ``Timeout(seconds)`` cancels the awaiting task when the time is up and raises
:class:`~safeship.resilience.DeadlineExceeded` (a ``TimeoutError``), with the same
cancellation bookkeeping as :func:`asyncio.timeout`. Instead of one timer per call it
files each call in a coarse *timer wheel* shared by the event loop: deadlines are
rounded up to ``resolution`` (default 10 ms, finer for short timeouts) and one loop timer
serves every call due in the same slot. A call costs a set insertion and removal, not a
heap timer, so a timeout may fire up to ``resolution`` late, never early.

**Sync.** Python cannot safely interrupt a running thread, and starting a thread per
call only hides work that goes on running. So a plain function gets a *deadline*: the
timeout publishes it in a context variable for the duration of the call, code that does
I/O reads :func:`remaining` and passes it to its client's own timeout (safeship's httpx
transport does so), nested timeouts and :class:`~safeship.resilience.Retry` never go past
it, and when the call returns after the deadline its result is discarded and
:class:`DeadlineExceeded` raised, so the caller sees the overrun like a timeout.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import ParamSpec, TypeVar

from safeship.resilience._clock import SYSTEM_CLOCK, Clock
from safeship.resilience._errors import DeadlineExceeded
from safeship.resilience._policy import Guard, GuardedPolicy

__all__ = ["Timeout", "current_deadline", "deadline", "remaining"]

P = ParamSpec("P")
R = TypeVar("R")
_DEADLINE: ContextVar[float | None] = ContextVar("safeship_deadline", default=None)
_running_loop = asyncio.get_running_loop
_current_task = asyncio.current_task
_MAX_SECONDS = 86_400.0
_EARLY = 1e-6


def current_deadline() -> float | None:
    """The innermost sync deadline, in ``time.monotonic()`` seconds, or ``None``."""
    return _DEADLINE.get()


def remaining(clock: Clock = SYSTEM_CLOCK) -> float | None:
    """Seconds left before the current sync deadline (never negative), or ``None``."""
    found = _DEADLINE.get()
    return None if found is None else max(0.0, found - clock.monotonic())


@contextmanager
def deadline(seconds: float, *, clock: Clock = SYSTEM_CLOCK) -> Iterator[float]:
    """Publish a deadline ``seconds`` from now (or the outer one, if sooner) for a block."""
    at = clock.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None:
        at = min(at, outer)
    token = _DEADLINE.set(at)
    try:
        yield at
    finally:
        _DEADLINE.reset(token)


class Timeout(GuardedPolicy):
    """Bound one call to ``seconds`` (see the module docs for sync versus async)."""

    __slots__ = ("_wheel", "clock", "resolution", "seconds")

    def __init__(
        self, seconds: float, *, resolution: float | None = None, clock: Clock | None = None
    ) -> None:
        _check_seconds("seconds", seconds)
        if resolution is None:
            resolution = max(0.001, min(0.01, seconds / 10))
        _check_seconds("resolution", resolution)
        self.seconds = float(seconds)
        self.resolution = float(resolution)
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self._wheel: _Wheel | None = None

    def __repr__(self) -> str:
        return f"Timeout({self.seconds:g})"

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Run ``fn`` under a published deadline; raise if it returns after it."""
        now = self.clock.monotonic
        seconds = self.seconds

        def timeout_call(*args: P.args, **kwargs: P.kwargs) -> R:
            at = _enter_deadline(now(), seconds)
            token = _DEADLINE.set(at)
            try:
                result = fn(*args, **kwargs)
            finally:
                _DEADLINE.reset(token)
            if now() > at:
                raise _overrun(seconds)
            return result

        return timeout_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Cancel ``fn`` when the time is up and raise :class:`DeadlineExceeded`."""
        seconds = self.seconds
        start = self._start

        async def timeout_call(*args: P.args, **kwargs: P.kwargs) -> R:
            entry = start()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _finish(entry, exc, seconds)
                raise
            entry.bucket.discard(entry)
            if entry.expired:
                entry.task.uncancel()
            return result

        return timeout_call

    def _start(self) -> _Entry:
        loop = _running_loop()
        task = _current_task(loop)
        if task is None:
            raise RuntimeError("Timeout needs to run inside an asyncio task")
        wheel = self._wheel
        if wheel is None or wheel.loop is not loop or not wheel.alive:
            wheel = self._wheel = _wheel_for(loop, self.resolution)
        entry = _Entry(task)
        wheel.add(entry, wheel.time() + self.seconds)
        return entry

    def guard(self) -> Guard:
        """A single-use context manager bounding one block."""
        return _TimeoutGuard(self)


class _Entry:
    __slots__ = ("bucket", "cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False
        self.bucket: set[_Entry] = _NO_BUCKET


_NO_BUCKET: set[_Entry] = set()


def _finish(entry: _Entry, exc: BaseException, seconds: float) -> None:
    """On an exception: leave the wheel and turn our own cancellation into a timeout."""
    entry.bucket.discard(entry)
    if not entry.expired:
        return
    if entry.task.uncancel() <= entry.cancelling and isinstance(exc, asyncio.CancelledError):
        raise _overrun(seconds) from exc


class _Wheel:
    """One event loop's coarse timer: deadline slots, and one loop timer at a time."""

    __slots__ = ("alive", "buckets", "handle", "heap", "loop", "resolution", "scheduled", "time")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float) -> None:
        self.loop = loop
        self.time = loop.time
        self.resolution = resolution
        self.buckets: dict[int, set[_Entry]] = {}
        self.heap: list[int] = []
        self.handle: asyncio.TimerHandle | None = None
        self.scheduled: int | None = None
        self.alive = True

    def add(self, entry: _Entry, at: float) -> None:
        key = math.ceil(at / self.resolution)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = set()
            heapq.heappush(self.heap, key)
            if self.scheduled is None or key < self.scheduled:
                self._schedule(key)
        bucket.add(entry)
        entry.bucket = bucket

    def _schedule(self, key: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.scheduled = key
        self.handle = self.loop.call_at(key * self.resolution, self._tick)

    def _tick(self) -> None:
        self.handle = None
        self.scheduled = None
        due = self.time() + _EARLY
        heap, buckets = self.heap, self.buckets
        while heap and (heap[0] * self.resolution <= due or not buckets[heap[0]]):
            for entry in buckets.pop(heapq.heappop(heap)):
                entry.expired = True
                entry.task.cancel()
        if heap:
            self._schedule(heap[0])
        else:
            self.alive = False
            _WHEELS.pop((self.loop, self.resolution), None)


_WHEELS: dict[tuple[asyncio.AbstractEventLoop, float], _Wheel] = {}


def _wheel_for(loop: asyncio.AbstractEventLoop, resolution: float) -> _Wheel:
    wheel = _WHEELS.get((loop, resolution))
    if wheel is None:
        for key in list(_WHEELS):
            if key[0].is_closed():
                _WHEELS.pop(key, None)
        wheel = _WHEELS[(loop, resolution)] = _Wheel(loop, resolution)
    return wheel


class _TimeoutGuard:
    __slots__ = ("entry", "policy", "token")

    def __init__(self, policy: Timeout) -> None:
        self.policy = policy
        self.entry: _Entry | None = None
        self.token: object = None

    def __enter__(self) -> None:
        self.token = _DEADLINE.set(
            _enter_deadline(self.policy.clock.monotonic(), self.policy.seconds)
        )

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        at = _DEADLINE.get()
        _DEADLINE.reset(self.token)  # type: ignore[arg-type]
        if ev is None and at is not None and self.policy.clock.monotonic() > at:
            raise _overrun(self.policy.seconds)

    async def __aenter__(self) -> None:
        self.entry = self.policy._start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        entry = self.entry
        if entry is None:
            return
        if ev is not None:
            _finish(entry, ev, self.policy.seconds)
            return
        entry.bucket.discard(entry)
        if entry.expired:
            entry.task.uncancel()


def _enter_deadline(now: float, seconds: float) -> float:
    at = now + seconds
    outer = _DEADLINE.get()
    if outer is not None:
        if outer <= now:
            raise DeadlineExceeded(
                "the enclosing deadline had already passed; the call was not made"
            )
        at = min(at, outer)
    return at


def _overrun(seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"the call did not finish within its {seconds:g} s timeout")


def _check_seconds(field: str, value: object) -> None:
    ok = (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= _MAX_SECONDS
    )
    if not ok:
        raise ValueError(
            f"Timeout.{field} must be a positive number of seconds (<= 1 day), got {value!r}"
        )
