"""Fallback: answer with a substitute when the protected call fails or is rejected.

:func:`answer_sync` and :func:`answer_async` are the one implementation of "call, and
answer the exceptions ``answers`` accepts with the fallback"; :class:`Fallback` and a
breaker's ``fallback=`` both use them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from safeship.resilience._policy import Policy

__all__ = ["Fallback", "answer_async", "answer_sync", "resolve_fallback", "resolve_fallback_async"]

P = ParamSpec("P")
R = TypeVar("R")
Answers = Callable[[Exception], bool]


def resolve_fallback(fallback: Any, exc: BaseException) -> Any:
    """A fallback is a value, or a callable given the exception that triggered it."""
    return fallback(exc) if callable(fallback) else fallback


async def resolve_fallback_async(fallback: Any, exc: BaseException) -> Any:
    """Like :func:`resolve_fallback`, awaiting the answer when it is awaitable."""
    value = resolve_fallback(fallback, exc)
    if inspect.isawaitable(value):
        return await value
    return value


def answer_sync(fn: Callable[P, R], fallback: Any, answers: Answers) -> Callable[P, R]:
    """``fn``, with the exceptions ``answers`` accepts answered by ``fallback``."""

    def fallback_call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not answers(exc):
                raise
            return cast(R, resolve_fallback(fallback, exc))

    return fallback_call


def answer_async(
    fn: Callable[P, Awaitable[R]], fallback: Any, answers: Answers
) -> Callable[P, Awaitable[R]]:
    """The async twin of :func:`answer_sync` (the fallback may be a coroutine function)."""

    async def fallback_call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not answers(exc):
                raise
            return cast(R, await resolve_fallback_async(fallback, exc))

    return fallback_call


class Fallback(Policy):
    """Return ``fallback`` (a value, or a callable given the exception) instead of raising.

    ``on`` limits which exceptions it answers (default: every ``Exception``, including
    rejections by other policies such as an open breaker). A callable fallback may be a
    coroutine function when it guards async code. To return a callable *as the value*,
    wrap it: ``Fallback(lambda exc: my_function)``.
    """

    __slots__ = ("fallback", "on")

    def __init__(self, fallback: Any, *, on: tuple[type[Exception], ...] = (Exception,)) -> None:
        if isinstance(on, type):
            on = (on,)
        ok = (
            isinstance(on, tuple)
            and on
            and all(isinstance(item, type) and issubclass(item, Exception) for item in on)
        )
        if not ok:
            raise TypeError(
                f"Fallback.on must be a non-empty tuple of Exception classes, got {on!r}"
            )
        self.fallback = fallback
        self.on = on

    def __repr__(self) -> str:
        return f"Fallback({self.fallback!r})"

    def _answers(self, exc: Exception) -> bool:
        return isinstance(exc, self.on)

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Answer failures of a plain function."""
        return answer_sync(fn, self.fallback, self._answers)

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Answer failures of a coroutine function."""
        return answer_async(fn, self.fallback, self._answers)
