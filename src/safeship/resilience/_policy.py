"""The shape every policy shares: decorator, plain call, sync and async twins."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, cast

__all__ = ["Guard", "GuardedPolicy", "Policy"]

P = ParamSpec("P")
R = TypeVar("R")


class Policy:
    """Base class: subclasses implement :meth:`wrap_sync` and :meth:`wrap_async`.

    One policy object serves sync and async callers alike: used as a decorator it looks
    at the function and wraps it with the matching twin, keeping its signature for type
    checkers (``ParamSpec``).
    """

    __slots__ = ()

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Return ``fn`` guarded by this policy (a plain function)."""
        raise NotImplementedError

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Return ``fn`` guarded by this policy (a coroutine function)."""
        raise NotImplementedError

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn``; coroutine functions get the async twin."""
        if inspect.iscoroutinefunction(fn):
            wrapped: Callable[..., Any] = self.wrap_async(cast(Callable[P, Awaitable[Any]], fn))
        else:
            wrapped = self.wrap_sync(fn)
        return cast(Callable[P, R], functools.update_wrapper(wrapped, fn))

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` once under this policy (sync)."""
        return self.wrap_sync(fn)(*args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` once under this policy."""
        return await self.wrap_async(fn)(*args, **kwargs)


class Guard(Protocol):
    """A single-use context manager guarding one block, sync or async."""

    def __enter__(self) -> None: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


_ACTIVE: ContextVar[tuple[tuple[object, Guard], ...]] = ContextVar("safeship_guards", default=())


class GuardedPolicy(Policy):
    """A policy that can also guard a ``with`` / ``async with`` block.

    Each entry builds a fresh :class:`Guard` (kept in a context variable until the block
    exits), so one policy object can guard many threads and tasks at once.
    """

    __slots__ = ()

    def guard(self) -> Guard:
        """A fresh single-use context manager applying this policy to one block."""
        raise NotImplementedError

    def __enter__(self) -> None:
        guard = self.guard()
        guard.__enter__()
        _ACTIVE.set((*_ACTIVE.get(), (self, guard)))

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._pop().__exit__(et, ev, tb)

    async def __aenter__(self) -> None:
        guard = self.guard()
        await guard.__aenter__()
        _ACTIVE.set((*_ACTIVE.get(), (self, guard)))

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._pop().__aexit__(et, ev, tb)

    def _pop(self) -> Guard:
        stack = _ACTIVE.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] is self:
                _ACTIVE.set(stack[:index] + stack[index + 1 :])
                return stack[index][1]
        raise RuntimeError(f"{type(self).__name__} exited a block it never entered")
