"""The breaker's call drivers: admit, run the call, record its outcome — sync and async.

A driver reads the core's :attr:`~BreakerCore.ticket` (one attribute: a permit while
calls run freely), asks the facade to admit otherwise, runs the call, and records the
outcome. A plain success — no slow-call timing, no result predicate — goes straight to
:meth:`BreakerCore.record`; everything else goes through the facade's public
``record_success`` / ``record_exception``, the one place outcomes are classified. The two
drivers are twins only in where they ``await``: the sync/async split that Python itself
imposes, kept flat (locals, no extra frame) because every guarded call runs it. A call
without keyword arguments is passed on as ``fn(*args)``: ``fn(*args, **kwargs)`` would
copy the (empty) dict on every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar

from safeship.resilience._breaker_core import REJECTED, BreakerCore
from safeship.resilience._breaker_types import Transition
from safeship.resilience._clock import Clock
from safeship.resilience._errors import BreakerOpen

__all__ = ["NO_RESULT", "BlockGuard", "Driving", "Recording", "drive_async", "drive_sync"]

P = ParamSpec("P")
R = TypeVar("R")


class Driving(NamedTuple):
    """What a breaker hands its drivers, built once per breaker."""

    core: BreakerCore
    enter: Callable[[], int]
    """``allow``: a permit, or raise the :class:`BreakerOpen` rejection."""
    emit: Callable[[Transition], None]
    succeeded: Callable[[int, float, Any], None]
    """``record_success``: judges slow calls and the result predicate."""
    raised: Callable[[int, float, BaseException], bool]
    """``record_exception``: classifies the exception."""
    judged: bool
    """Whether successes need the facade (slow-call timing or a result predicate): a
    plain success goes straight to the core."""
    dated: bool
    """Whether the window needs the time of a plain success (a time window)."""


def drive_sync(driving: Driving, fn: Callable[P, R]) -> Callable[P, R]:
    """Guard the plain function ``fn``."""
    core, enter, emit, succeeded, raised, judged, dated = driving
    record, admit = core.record, core.admit
    now = core.clock.monotonic
    end = now if dated else float  # float() is 0.0, without a Python frame

    def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        if (permit := core.ticket) < 0:
            admitted, event = admit()
            if event is not None:
                emit(event)
            if isinstance(admitted, BreakerOpen):
                raise admitted  # built by the core, raised here: a one-frame traceback
            permit = admitted
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)  # type: ignore[call-arg]
        except BaseException as exc:
            raised(permit, 0.0, exc)
            raise
        if (event := record(permit, end(), 0)) is not None:
            emit(event)
        return result

    def judged_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = ticket if (ticket := core.ticket) >= 0 else enter()
        started = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, started, exc)
            raise
        succeeded(permit, started, result)
        return result

    return judged_call if judged else breaker_call


def drive_async(driving: Driving, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Guard the coroutine function ``fn`` (the twin of :func:`drive_sync`)."""
    core, enter, emit, succeeded, raised, judged, dated = driving
    record, admit = core.record, core.admit
    now = core.clock.monotonic
    end = now if dated else float

    async def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        if (permit := core.ticket) < 0:
            admitted, event = admit()
            if event is not None:
                emit(event)
            if isinstance(admitted, BreakerOpen):
                raise admitted  # built by the core, raised here: a one-frame traceback
            permit = admitted
        try:
            result = await (fn(*args, **kwargs) if kwargs else fn(*args))  # type: ignore[call-arg]
        except BaseException as exc:
            raised(permit, 0.0, exc)
            raise
        if (event := record(permit, end(), 0)) is not None:
            emit(event)
        return result

    async def judged_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = ticket if (ticket := core.ticket) >= 0 else enter()
        started = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, started, exc)
            raise
        succeeded(permit, started, result)
        return result

    return judged_call if judged else breaker_call


class Recording(Protocol):
    """The public side of a breaker that a block guard uses."""

    @property
    def clock(self) -> Clock: ...

    def allow(self) -> int: ...

    def record_success(self, permit: int, started: float = 0.0, result: Any = ...) -> None: ...

    def record_exception(self, permit: int, started: float, exc: BaseException) -> bool: ...


class BlockGuard:
    """A single-use ``with`` / ``async with`` guard for one block (a block has no result)."""

    __slots__ = ("breaker", "permit", "started")

    def __init__(self, breaker: Recording) -> None:
        self.breaker = breaker
        self.permit = REJECTED
        self.started = 0.0

    def __enter__(self) -> None:
        self.permit = self.breaker.allow()
        self.started = self.breaker.clock.monotonic()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            self.breaker.record_success(self.permit, self.started)
        else:
            self.breaker.record_exception(self.permit, self.started, ev)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)


class _NoResult:
    """What a block or an exception "returned": the result predicate is never asked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no result>"


NO_RESULT: Any = _NoResult()
