"""Fault injection ("chaos"): make a dependency fail, stall or lie on purpose, at a rate.

``Chaos(rate=0.1, exception=ConnectionError)`` raises a fresh ``ConnectionError`` on
about one call in ten; ``latency=0.5`` (or a ``(low, high)`` range) delays them first;
``result=...`` returns that value instead of calling. Put it innermost in a pipeline
(the default order does) so timeouts, breakers and retries react to the faults exactly
as they would to real ones.

``enabled`` switches it at run time: a plain bool, or any ``() -> bool`` callable read on
every call — plug a feature flag in here to turn chaos on and off without a deploy.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from safeship.errors import SafeshipError
from safeship.resilience._clock import SYSTEM_CLOCK, Clock
from safeship.resilience._log import logger
from safeship.resilience._policy import Guard, GuardedPolicy

__all__ = ["Chaos", "ChaosError"]

P = ParamSpec("P")
R = TypeVar("R")
_UNSET: Any = object()


class ChaosError(SafeshipError):
    """The default injected failure."""


class Chaos(GuardedPolicy):
    """Inject exceptions, latency or results into ``rate`` of the calls while enabled."""

    __slots__ = ("_enabled", "_random", "clock", "exception", "latency", "name", "rate", "result")

    def __init__(
        self,
        *,
        rate: float,
        exception: type[BaseException] | BaseException | Callable[[], BaseException] | None = None,
        latency: float | tuple[float, float] | None = None,
        result: Any = _UNSET,
        enabled: bool | Callable[[], bool] = True,
        name: str = "chaos",
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"Chaos.rate must be a fraction from 0 to 1, got {rate!r}")
        if exception is None and latency is None and result is _UNSET:
            raise ValueError("Chaos needs something to inject: exception=, latency= or result=")
        if exception is not None and result is not _UNSET:
            raise ValueError("Chaos takes exception= or result=, not both")
        self.rate = float(rate)
        self.exception = exception
        self.latency = _check_latency(latency)
        self.result = result
        self.name = name
        self._enabled: Callable[[], bool] = (
            enabled if callable(enabled) else (lambda: True) if enabled else (lambda: False)
        )
        self._random = (rng or random.Random()).random
        self.clock = clock if clock is not None else SYSTEM_CLOCK

    def strikes(self) -> bool:
        """Decide for one call whether to inject (enabled, then a draw under ``rate``)."""
        return self.rate > 0 and self._enabled() and self._random() < self.rate

    def _delay(self) -> float:
        if self.latency is None:
            return 0.0
        low, high = self.latency
        return low if low == high else low + (high - low) * self._random()

    def _fault(self) -> BaseException | None:
        spec = self.exception
        if spec is None:
            return None
        if isinstance(spec, type):
            return cast(BaseException, spec(f"{self.name}: injected fault"))
        if isinstance(spec, BaseException):
            return copy.copy(spec)  # a fresh object each time: no traceback builds up
        made: BaseException = spec()
        return made

    def _log(self) -> None:
        logger.debug("resilience.chaos.injected", extra={"policy": self.name})

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Inject into a plain function."""

        def chaos_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if not self.strikes():
                return fn(*args, **kwargs)
            self._log()
            delay = self._delay()
            if delay:
                self.clock.sleep(delay)
            fault = self._fault()
            if fault is not None:
                raise fault
            return fn(*args, **kwargs) if self.result is _UNSET else cast(R, self.result)

        return chaos_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Inject into a coroutine function."""

        async def chaos_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if not self.strikes():
                return await fn(*args, **kwargs)
            self._log()
            delay = self._delay()
            if delay:
                await self.clock.sleep_async(delay)
            fault = self._fault()
            if fault is not None:
                raise fault
            return await fn(*args, **kwargs) if self.result is _UNSET else cast(R, self.result)

        return chaos_call

    def guard(self) -> Guard:
        """A single-use context manager injecting latency or an exception on entry."""
        if self.result is not _UNSET:
            raise TypeError("Chaos with result= needs a function (a block has no result)")
        return _ChaosGuard(self)


class _ChaosGuard:
    __slots__ = ("chaos",)

    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos

    def __enter__(self) -> None:
        if self.chaos.strikes():
            self.chaos._log()
            delay = self.chaos._delay()
            if delay:
                self.chaos.clock.sleep(delay)
            fault = self.chaos._fault()
            if fault is not None:
                raise fault

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def __aenter__(self) -> None:
        if self.chaos.strikes():
            self.chaos._log()
            delay = self.chaos._delay()
            if delay:
                await self.chaos.clock.sleep_async(delay)
            fault = self.chaos._fault()
            if fault is not None:
                raise fault

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _check_latency(latency: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if latency is None:
        return None
    pair = latency if isinstance(latency, tuple) else (latency, latency)
    ok = len(pair) == 2 and all(
        isinstance(item, int | float) and not isinstance(item, bool) and 0 <= item <= 3600
        for item in pair
    )
    if not ok or pair[0] > pair[1]:
        raise ValueError(f"Chaos.latency must be seconds or a (low, high) pair, got {latency!r}")
    return (float(pair[0]), float(pair[1]))
