"""Retry: call again after a transient failure, waiting a jittered, growing delay.

``Retry`` makes at most ``attempts`` attempts. After a failure it retries only when the
failure is retryable:

* an exception that is an instance of ``retry_on`` (or for which the ``retry_on``
  predicate returns True), and not of ``never_on`` (by default an open breaker: its
  rejection is the point of failing fast), and not *permanent*: an HTTP 4xx answer other
  than 408/425/429, or an exception declaring ``retryable = False``
  (see :mod:`safeship.resilience._classify`);
* or a returned value for which ``retry_if_result`` returns True (say, a 503 response).

It waits ``schedule.delay(...)`` seconds (full jitter by default, see
:mod:`safeship.resilience._schedules`), at least what a ``Retry-After`` hint asks for.
It gives up — re-raising the last exception, or returning the last result — when the
attempts are used up, when the next wait would cross ``deadline`` (seconds since the
first attempt) or the enclosing sync deadline, when a ``Retry-After`` hint exceeds
``max_retry_after``, or when the shared :class:`~safeship.resilience.RetryBudget` is
spent. ``discard_result`` is called on a value about to be retried (close an HTTP
response; in async code it may return an awaitable). ``on_retry`` sees a
:class:`RetryEvent` before each wait. A successful first attempt costs one extra function
frame and nothing else.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from safeship.resilience._budget import RetryBudget
from safeship.resilience._classify import is_permanent, retry_after_hint
from safeship.resilience._clock import SYSTEM_CLOCK, Clock, jitter_source, sleep_async, sleep_sync
from safeship.resilience._errors import BreakerOpen
from safeship.resilience._hooks import run_hook
from safeship.resilience._log import logger
from safeship.resilience._policy import Policy
from safeship.resilience._schedules import FullJitter, Schedule
from safeship.resilience._timeout import current_deadline

__all__ = ["Retry", "RetryEvent"]

P = ParamSpec("P")
R = TypeVar("R")
ExceptionTypes = tuple[type[BaseException], ...]
_NO_RESULT: Any = object()
_Plan = Generator[tuple[float, Any], tuple[Any, Exception | None], Any]


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What ``on_retry`` receives before each wait: which attempt failed and how."""

    policy: str
    attempt: int
    """The attempt that just failed (1 is the first call)."""
    delay: float
    """Seconds the policy is about to wait."""
    exception: BaseException | None
    result: Any


class Retry(Policy):
    """Retry transient failures with backoff; keyword-only settings checked here."""

    __slots__ = (
        "_never_on",
        "_retry_on",
        "_rng",
        "attempts",
        "budget",
        "clock",
        "deadline",
        "discard_result",
        "max_retry_after",
        "name",
        "on_retry",
        "respect_retry_after",
        "retry_if_result",
        "schedule",
    )

    def __init__(
        self,
        *,
        attempts: int = 3,
        schedule: Schedule | None = None,
        deadline: float | None = None,
        retry_on: type[BaseException] | ExceptionTypes | Callable[[BaseException], bool] = (
            Exception,
        ),
        never_on: ExceptionTypes = (BreakerOpen,),
        retry_if_result: Callable[[Any], bool] | None = None,
        respect_retry_after: bool = True,
        max_retry_after: float = 60.0,
        budget: RetryBudget | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        discard_result: Callable[[Any], object] | None = None,
        name: str = "retry",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if isinstance(never_on, type):
            never_on = (never_on,)
        _validate(attempts, deadline, max_retry_after, retry_on, never_on)
        for field, value in (("retry_if_result", retry_if_result), ("on_retry", on_retry)):
            if value is not None and not callable(value):
                raise TypeError(f"Retry.{field} must be callable, got {value!r}")
        self.attempts = attempts
        self.schedule: Schedule = schedule if schedule is not None else FullJitter()
        self.deadline = None if deadline is None else float(deadline)
        self._retry_on = retry_on
        self._never_on = never_on
        self.retry_if_result = retry_if_result
        self.respect_retry_after = respect_retry_after
        self.max_retry_after = float(max_retry_after)
        self.budget = budget
        self.on_retry = on_retry
        self.discard_result = discard_result
        self.name = name
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self._rng = rng

    def __repr__(self) -> str:
        return f"Retry(attempts={self.attempts}, schedule={self.schedule!r})"

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried (ignoring attempts, deadline and budget)."""
        if not isinstance(exc, Exception) or isinstance(exc, self._never_on) or is_permanent(exc):
            return False
        retry_on = self._retry_on
        if isinstance(retry_on, tuple):
            return isinstance(exc, retry_on)
        return bool(run_hook(self.name, "retry_on", retry_on, False, exc))

    def _retries_result(self, result: Any) -> bool:
        """Whether ``retry_if_result`` asks to retry ``result`` (a raising check: no)."""
        check = self.retry_if_result
        return check is not None and bool(
            run_hook(self.name, "retry_if_result", check, False, result)
        )

    # -- wrapping ----------------------------------------------------------------------

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Retry a plain function (sleeping between attempts)."""
        record_call = self.budget.record_call if self.budget is not None else None
        check = None if self.retry_if_result is None else self._retries_result
        now = self.clock.monotonic
        timed = self.deadline is not None
        again = self._again_sync

        def retry_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if record_call is not None:
                record_call()
            started = now() if timed else 0.0
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - retryability is decided by _plan
                return again(fn, args, kwargs, started, exc, _NO_RESULT)
            if check is not None and check(result):
                return again(fn, args, kwargs, started, None, result)
            return result

        return retry_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Retry a coroutine function (awaiting between attempts)."""
        record_call = self.budget.record_call if self.budget is not None else None
        check = None if self.retry_if_result is None else self._retries_result
        now = self.clock.monotonic
        timed = self.deadline is not None
        again = self._again_async

        async def retry_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if record_call is not None:
                record_call()
            started = now() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - retryability is decided by _plan
                return await again(fn, args, kwargs, started, exc, _NO_RESULT)
            if check is not None and check(result):
                return await again(fn, args, kwargs, started, None, result)
            return result

        return retry_call

    # -- the slow path -----------------------------------------------------------------

    def _schedule(self, started: float, exc: Exception | None, result: Any) -> _Plan:
        """The retries after a failed first attempt, as a generator doing no I/O.

        It yields ``(delay, stale)`` — wait ``delay`` seconds, after discarding ``stale``
        (a retried result, or ``_NO_RESULT``) — and is sent each new attempt's
        ``(result, exception)``. It returns the answer, or raises the last exception.
        """
        attempt, previous = 1, 0.0
        while (delay := self._plan(attempt, previous, started, exc, result)) is not None:
            result, exc = yield delay, result
            attempt, previous = attempt + 1, delay
            if exc is None and not self._retries_result(result):
                return result
        return _give_up(exc, result)

    def _again_sync(
        self, fn: Callable[..., R], args: Any, kwargs: Any, started: float,
        exc: Exception | None, result: Any,
    ) -> R:  # fmt: skip
        plan = self._schedule(started, exc, result)
        try:
            delay, stale = next(plan)
            while True:
                self._discard(stale)
                sleep_sync(self.clock, delay)
                try:
                    outcome: tuple[Any, Exception | None] = (fn(*args, **kwargs), None)
                except Exception as error:  # noqa: BLE001 - retryability is decided by _plan
                    outcome = (_NO_RESULT, error)
                delay, stale = plan.send(outcome)
        except StopIteration as done:
            return cast(R, done.value)

    async def _again_async(
        self, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any, started: float,
        exc: Exception | None, result: Any,
    ) -> R:  # fmt: skip
        plan = self._schedule(started, exc, result)
        try:
            delay, stale = next(plan)
            while True:
                await self._discard_async(stale)
                await sleep_async(self.clock, delay)
                try:
                    outcome: tuple[Any, Exception | None] = (await fn(*args, **kwargs), None)
                except Exception as error:  # noqa: BLE001 - retryability is decided by _plan
                    outcome = (_NO_RESULT, error)
                delay, stale = plan.send(outcome)
        except StopIteration as done:
            return cast(R, done.value)

    def _discard(self, stale: Any) -> object:
        """Hand a result about to be retried to ``discard_result`` (contained)."""
        if self.discard_result is None or stale is _NO_RESULT:
            return None
        return run_hook(self.name, "discard_result", self.discard_result, None, stale)

    async def _discard_async(self, stale: Any) -> None:
        discarded = self._discard(stale)
        if inspect.isawaitable(discarded):
            try:
                await discarded
            except Exception:  # noqa: BLE001 - a faulty hook must never stop the retries
                logger.exception(
                    "resilience.hook_failed", extra={"policy": self.name, "hook": "discard_result"}
                )

    def _plan(
        self, attempt: int, previous: float, started: float, exc: Exception | None, result: Any
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if exc is not None and not self.is_retryable(exc):
            return None
        if attempt >= self.attempts:
            return None
        delay = self.schedule.delay(attempt, previous, jitter_source(self._rng))
        if self.respect_retry_after:
            hint = retry_after_hint(exc if exc is not None else result)
            if hint is not None and hint > self.max_retry_after:
                return None
            if hint is not None:
                delay = max(delay, hint)
        if not self._fits_deadlines(started, delay):
            return None
        if self.budget is not None and not self.budget.try_spend():
            return None
        self._announce(attempt, delay, exc, result)
        return delay

    def _fits_deadlines(self, started: float, delay: float) -> bool:
        now = self.clock.monotonic()
        if self.deadline is not None and now + delay >= started + self.deadline:
            return False
        outer = current_deadline()
        return outer is None or now + delay < outer

    def _announce(self, attempt: int, delay: float, exc: Exception | None, result: Any) -> None:
        shown = None if result is _NO_RESULT else result
        logger.debug(
            "resilience.retry.attempt_failed",
            extra={"policy": self.name, "attempt": attempt, "delay": delay, "error": repr(exc)},
        )
        if self.on_retry is not None:
            event = RetryEvent(self.name, attempt, delay, exc, shown)
            run_hook(self.name, "on_retry", self.on_retry, None, event)


def _give_up(exc: Exception | None, result: Any) -> Any:
    if exc is not None:
        raise exc
    return result


def _validate(
    attempts: object, deadline: object, max_retry_after: object, retry_on: object, never_on: object
) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
        raise ValueError(
            f"Retry.attempts must be an int from 1 to 1000 (1 = no retry), got {attempts!r}"
        )
    for field, value in (("deadline", deadline), ("max_retry_after", max_retry_after)):
        if value is None and field == "deadline":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"Retry.{field} must be a positive number of seconds, got {value!r}")
    if not callable(retry_on):
        _check_types("retry_on", retry_on)
    _check_types("never_on", never_on)


def _check_types(field: str, value: object) -> None:
    ok = isinstance(value, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in value
    )
    if not ok:
        raise TypeError(f"Retry.{field} must be a tuple of exception classes, got {value!r}")
