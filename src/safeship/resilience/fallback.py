"""Fallback: answer with a substitute when the protected call fails or is rejected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from safeship.resilience._breaker_calls import resolve_fallback, resolve_fallback_async
from safeship.resilience._policy import Policy

__all__ = ["Fallback"]

P = ParamSpec("P")
R = TypeVar("R")


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

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Answer failures of a plain function."""
        fallback, on = self.fallback, self.on

        def fallback_call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except on as exc:
                return cast(R, resolve_fallback(fallback, exc))

        return fallback_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Answer failures of a coroutine function."""
        fallback, on = self.fallback, self.on

        async def fallback_call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except on as exc:
                return cast(R, await resolve_fallback_async(fallback, exc))

        return fallback_call
