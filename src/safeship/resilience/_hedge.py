"""Hedging (async): when an answer is late, ask again and take whichever comes first.

``Hedge(delay=0.05)`` starts the call; if it has not finished after 50 ms it starts a
second attempt (up to ``max_hedges`` extra ones), returns the first success and cancels
the rest. With ``percentile=95`` the delay follows the observed latency of successful
calls instead (``delay`` is used until ``warmup`` samples exist), clamped to
``[min_delay, max_delay]``. An attempt that fails early triggers the next hedge at once;
when every attempt failed, the last error is raised. Only hedge idempotent calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from safeship.resilience._policy import Policy

__all__ = ["Hedge"]

P = ParamSpec("P")
R = TypeVar("R")
_RECOMPUTE_EVERY = 32


class Hedge(Policy):
    """Start up to ``max_hedges`` extra attempts after a fixed or percentile delay."""

    __slots__ = (
        "_count",
        "_current",
        "_lock",
        "_samples",
        "delay",
        "max_delay",
        "max_hedges",
        "min_delay",
        "percentile",
        "warmup",
    )

    def __init__(
        self,
        *,
        delay: float = 0.05,
        percentile: float | None = None,
        max_hedges: int = 1,
        min_delay: float = 0.001,
        max_delay: float = 10.0,
        samples: int = 512,
        warmup: int = 20,
    ) -> None:
        _check_positive("delay", delay)
        _check_positive("min_delay", min_delay)
        _check_positive("max_delay", max_delay)
        if percentile is not None and not (
            isinstance(percentile, int | float) and 0 < percentile < 100
        ):
            raise ValueError(f"Hedge.percentile must be between 0 and 100, got {percentile!r}")
        for field, value in (("max_hedges", max_hedges), ("samples", samples), ("warmup", warmup)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise ValueError(f"Hedge.{field} must be an int from 1 to 100000, got {value!r}")
        self.delay = float(delay)
        self.percentile = percentile
        self.max_hedges = max_hedges
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.warmup = warmup
        self._samples = [0.0] * samples
        self._count = 0
        self._current = self.delay
        self._lock = threading.Lock()

    def current_delay(self) -> float:
        """The delay before the next hedge, clamped to ``[min_delay, max_delay]``."""
        return min(self.max_delay, max(self.min_delay, self._current))

    def observe(self, seconds: float) -> None:
        """Add one successful call's latency to the percentile estimate."""
        if self.percentile is None:
            return
        with self._lock:
            self._samples[self._count % len(self._samples)] = seconds
            self._count += 1
            if self._count >= self.warmup and self._count % _RECOMPUTE_EVERY in (0, self.warmup):
                filled = sorted(self._samples[: min(self._count, len(self._samples))])
                index = min(len(filled) - 1, int(len(filled) * self.percentile / 100))
                self._current = filled[index]

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Hedging needs concurrent attempts, which plain functions cannot cancel."""
        raise TypeError("Hedge works on coroutine functions only (it cancels the losers)")

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Race attempts of ``fn`` as described in the module docs."""

        async def hedged_call(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self._race(lambda: _as_coroutine(fn(*args, **kwargs)))

        return hedged_call

    async def _race(self, start: Callable[[], Coroutine[Any, Any, R]]) -> R:
        loop = asyncio.get_running_loop()
        began = loop.time()
        running: set[asyncio.Task[R]] = {loop.create_task(start())}
        hedges_left = self.max_hedges
        last_error: BaseException | None = None
        try:
            while running:
                wait = self.current_delay() if hedges_left else None
                done, running = await asyncio.wait(
                    running, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    error = task.exception()
                    if error is None:
                        self.observe(loop.time() - began)
                        return task.result()
                    last_error = error
                if hedges_left and (not done or not running):
                    running.add(loop.create_task(start()))
                    hedges_left -= 1
        finally:
            await _cancel_all(running)
        if last_error is None:  # unreachable: the loop only ends after a failure
            raise RuntimeError("hedge finished without a result or an error")
        raise last_error


async def _as_coroutine(awaitable: Awaitable[R]) -> R:
    return await awaitable


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _check_positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ValueError(f"Hedge.{field} must be a positive number of seconds, got {value!r}")
