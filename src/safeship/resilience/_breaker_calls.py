"""The breaker's call wrappers: the hot path, kept flat (locals, few frames).

A plain success in the CLOSED state (no slow-call timing, no result predicate) is
recorded inline: one clock read (time windows only), one lock round trip and one window
update. An open breaker's rejection is built by ``Breaker._admit`` and raised here, so
its traceback holds this one frame.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from safeship.resilience.breaker_types import State
from safeship.resilience.errors import BreakerOpen

if TYPE_CHECKING:
    from safeship.resilience.breaker import Breaker

P = ParamSpec("P")
R = TypeVar("R")
_CLOSED = State.CLOSED


def resolve_fallback(fallback: Any, exc: BaseException) -> Any:
    """A fallback is a value, or a callable given the exception that triggered it."""
    return fallback(exc) if callable(fallback) else fallback


async def resolve_fallback_async(fallback: Any, exc: BaseException) -> Any:
    """Like :func:`resolve_fallback`, awaiting the answer when it is awaitable."""
    value = fallback(exc) if callable(fallback) else fallback
    if inspect.isawaitable(value):
        return await value
    return value


def wrap_sync(breaker: Breaker, fn: Callable[P, R], fallback: Any) -> Callable[P, R]:
    """Guard ``fn`` with ``breaker``; with a fallback, answer rejections and failures."""
    call = _plain_sync(breaker, fn)
    if fallback is _no_fallback():
        return call

    @functools.wraps(fn)
    def with_fallback(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, BreakerOpen) or _counted_failure(breaker, exc):
                return resolve_fallback(fallback, exc)  # type: ignore[no-any-return]
            raise

    return with_fallback


def wrap_async(
    breaker: Breaker, fn: Callable[P, Awaitable[R]], fallback: Any
) -> Callable[P, Awaitable[R]]:
    """The async twin of :func:`wrap_sync`."""
    call = _plain_async(breaker, fn)
    if fallback is _no_fallback():
        return call

    @functools.wraps(fn)
    async def with_fallback(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, BreakerOpen) or _counted_failure(breaker, exc):
                return await resolve_fallback_async(fallback, exc)  # type: ignore[no-any-return]
            raise

    return with_fallback


def _plain_sync(breaker: Breaker, fn: Callable[P, R]) -> Callable[P, R]:
    if breaker._slow is not None or breaker._failure_result is not None:
        return _timed_sync(breaker, fn)
    admit = breaker._admit
    now = breaker._now if breaker.window.kind == "time" else _no_time
    succeeded = breaker.record_success
    raised = breaker.record_exception
    trip = breaker._trip
    counts = breaker._counts
    acquire = breaker._lock.acquire
    release = breaker._lock.release

    def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = breaker._generation  # read before the state: see Breaker.allow
        if breaker._state is not _CLOSED:
            admitted = admit()
            if isinstance(admitted, BreakerOpen):
                raise admitted
            permit = admitted
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, 0.0, exc)
            raise
        end = now()
        acquire()
        try:
            if permit == breaker._generation and breaker._state is _CLOSED:
                counts[0] += 1
                tripped: bool | None = breaker._window.record(end, 0)
            else:
                tripped = None
        finally:
            release()
        if tripped:
            trip(permit, end)
        elif tripped is None:
            succeeded(permit, 0.0, result)  # not CLOSED any more: the general path
        return result

    return breaker_call


def _timed_sync(breaker: Breaker, fn: Callable[P, R]) -> Callable[P, R]:
    """The general path: slow-call timing and/or a result predicate."""
    admit = breaker._admit
    now = breaker._now
    succeeded = breaker.record_success
    raised = breaker.record_exception

    def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = breaker._generation
        if breaker._state is not _CLOSED:
            admitted = admit()
            if isinstance(admitted, BreakerOpen):
                raise admitted
            permit = admitted
        started = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, started, exc)
            raise
        succeeded(permit, started, result)
        return result

    return breaker_call


def _plain_async(breaker: Breaker, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    if breaker._slow is not None or breaker._failure_result is not None:
        return _timed_async(breaker, fn)
    admit = breaker._admit
    now = breaker._now if breaker.window.kind == "time" else _no_time
    succeeded = breaker.record_success
    raised = breaker.record_exception
    trip = breaker._trip
    counts = breaker._counts
    acquire = breaker._lock.acquire
    release = breaker._lock.release

    async def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = breaker._generation  # read before the state: see Breaker.allow
        if breaker._state is not _CLOSED:
            admitted = admit()
            if isinstance(admitted, BreakerOpen):
                raise admitted
            permit = admitted
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, 0.0, exc)
            raise
        end = now()
        acquire()
        try:
            if permit == breaker._generation and breaker._state is _CLOSED:
                counts[0] += 1
                tripped: bool | None = breaker._window.record(end, 0)
            else:
                tripped = None
        finally:
            release()
        if tripped:
            trip(permit, end)
        elif tripped is None:
            succeeded(permit, 0.0, result)  # not CLOSED any more: the general path
        return result

    return breaker_call


def _timed_async(breaker: Breaker, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The general async path: slow-call timing and/or a result predicate."""
    admit = breaker._admit
    now = breaker._now
    succeeded = breaker.record_success
    raised = breaker.record_exception

    async def breaker_call(*args: P.args, **kwargs: P.kwargs) -> R:
        permit = breaker._generation
        if breaker._state is not _CLOSED:
            admitted = admit()
            if isinstance(admitted, BreakerOpen):
                raise admitted
            permit = admitted
        started = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            raised(permit, started, exc)
            raise
        succeeded(permit, started, result)
        return result

    return breaker_call


def _no_time() -> float:
    """Count and consecutive windows ignore time: skip reading the clock."""
    return 0.0


def _counted_failure(breaker: Breaker, exc: Exception) -> bool:
    """Whether the breaker counted ``exc`` as a failure (so the fallback answers it)."""
    return not isinstance(exc, breaker._ignore) and isinstance(exc, breaker._record)


def _no_fallback() -> Any:
    from safeship.resilience.breaker import _NO_FALLBACK

    return _NO_FALLBACK
