"""``Rollout``: one risky change, legacy and candidate side by side behind its flag.

    checkout = Rollout("checkout-v2", legacy=old_checkout, candidate=new_checkout, flags=client)
    receipt = checkout(cart, context={"userId": user.id})

The caller's code stays ``if flag: new() else: old()`` with the safety net built in: the
outcome of each call (error or not, latency) is counted for its arm, and the guard decides
from those counts whether the candidate may go further or must go back.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from safeship.rollouts._recorder import OutcomeRecorder
from safeship.rollouts._shadow import ShadowOptions, ShadowRunner

__all__ = ["FlagReader", "Mode", "Rollout"]


class Mode(StrEnum):
    """``off``: legacy only.  ``shadow``: legacy answers, candidate runs beside it and is
    compared.  ``canary``: the flag sends its percentage to the candidate.  ``on``:
    candidate only."""

    OFF = "off"
    SHADOW = "shadow"
    CANARY = "canary"
    ON = "on"


class FlagReader(Protocol):
    """What a rollout needs from flags: ``FlagClient`` and ``FlagSet`` both fit."""

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool: ...


class _Raised:
    """Stands for the exception legacy raised, so shadow runs still compare."""

    __slots__ = ("kind",)

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc).__name__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Raised) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return f"<raised {self.kind}>"


def _default_is_error(exc: BaseException | None, result: Any) -> bool:
    return exc is not None


class Rollout:
    """Routes calls to legacy or candidate by mode and flag; records outcomes per arm."""

    def __init__(
        self,
        name: str,
        *,
        legacy: Callable[..., Any],
        candidate: Callable[..., Any],
        flags: FlagReader | None = None,
        mode: Mode | str = Mode.OFF,
        is_error: Callable[[BaseException | None, Any], bool] | None = None,
        shadow: ShadowOptions | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not name or len(name) > 200:
            raise ValueError("name: the rollout's flag name, 1 to 200 characters")
        if not callable(legacy) or not callable(candidate):
            raise TypeError("legacy and candidate must be callables")
        self.name = name
        self.legacy = legacy
        self.candidate = candidate
        self.flags = flags
        self.recorder = OutcomeRecorder()
        self._is_error = is_error
        self._clock = clock
        self._rng = rng or random.Random()
        self.shadow = ShadowRunner(name, shadow or ShadowOptions(), rng=self._rng)
        self._tasks: set[asyncio.Task[None]] = set()
        self._mode = Mode.OFF
        self.mode = Mode(mode)

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, value: Mode | str) -> None:
        mode = Mode(value)
        if mode is Mode.CANARY and self.flags is None:
            raise ValueError(f"rollout {self.name!r}: canary mode needs flags= (a FlagClient)")
        self._mode = mode

    # -- sync --------------------------------------------------------------------------

    def __call__(self, *args: Any, context: Any = None, **kwargs: Any) -> Any:
        """Run the path the mode and flag choose for ``context``; return its result."""
        mode = self._mode
        if mode is Mode.OFF:
            return self.legacy(*args, **kwargs)
        if mode is Mode.SHADOW:
            return self._shadow_sync(args, kwargs, context)
        if mode is Mode.ON:
            return self._timed(self.candidate, "candidate", args, kwargs)
        assert self.flags is not None  # the mode setter guarantees it
        if self.flags.is_enabled(self.name, context):
            return self._timed(self.candidate, "candidate", args, kwargs)
        return self._timed(self.legacy, "control", args, kwargs)

    def _timed(self, fn: Callable[..., Any], arm: str, args: Any, kwargs: Any) -> Any:
        clock = self._clock
        started = clock()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self.recorder.record(arm, error=self._error(exc, None), seconds=clock() - started)
            raise
        is_error = self._is_error
        error = False if is_error is None else self._error(None, result)
        self.recorder.record(arm, error=error, seconds=clock() - started)
        return result

    def _error(self, exc: BaseException | None, result: Any) -> bool:
        if self._is_error is None:
            return exc is not None
        try:
            return bool(self._is_error(exc, result))
        except Exception:  # noqa: BLE001 - a faulty predicate counts the call as an error
            return True

    def _shadow_sync(self, args: Any, kwargs: Any, context: Any) -> Any:
        runner = self.shadow
        if not runner.wanted(context):
            return self.legacy(*args, **kwargs)

        if runner.options.off_path:
            control, raised = self._legacy_outcome(args, kwargs)
            runner.submit(self.candidate, args, kwargs, control, context)
            if raised is not None:
                raise raised
            return control

        def run_candidate() -> Any:
            return self.candidate(*args, **kwargs)

        if runner.options.randomize_order and self._rng.random() < 0.5:
            started = time.perf_counter()
            try:
                value, error = run_candidate(), None
            except Exception as exc:  # noqa: BLE001 - the candidate's failure is data
                value, error = None, exc
            seconds = time.perf_counter() - started
            control, raised = self._legacy_outcome(args, kwargs)
            runner.compare(control, value, error, seconds, context)
        else:
            control, raised = self._legacy_outcome(args, kwargs)
            runner.run_and_compare(run_candidate, control, context)
        if raised is not None:
            raise raised
        return control

    def _legacy_outcome(self, args: Any, kwargs: Any) -> tuple[Any, Exception | None]:
        try:
            return self.legacy(*args, **kwargs), None
        except Exception as exc:  # noqa: BLE001 - re-raised to the caller after comparing
            return _Raised(exc), exc

    # -- async -------------------------------------------------------------------------

    async def acall(self, *args: Any, context: Any = None, **kwargs: Any) -> Any:
        """The async twin of calling the rollout: legacy and candidate may be coroutine
        functions or plain functions."""
        mode = self._mode
        if mode is Mode.OFF:
            return await _maybe_await(self.legacy(*args, **kwargs))
        if mode is Mode.SHADOW:
            return await self._shadow_async(args, kwargs, context)
        use_candidate = mode is Mode.ON or (
            self.flags is not None and self.flags.is_enabled(self.name, context)
        )
        fn, arm = (self.candidate, "candidate") if use_candidate else (self.legacy, "control")
        clock = self._clock
        started = clock()
        try:
            result = await _maybe_await(fn(*args, **kwargs))
        except Exception as exc:
            self.recorder.record(arm, error=self._error(exc, None), seconds=clock() - started)
            raise
        error = False if self._is_error is None else self._error(None, result)
        self.recorder.record(arm, error=error, seconds=clock() - started)
        return result

    async def _shadow_async(self, args: Any, kwargs: Any, context: Any) -> Any:
        runner = self.shadow
        if not runner.wanted(context):
            return await _maybe_await(self.legacy(*args, **kwargs))
        try:
            control: Any = await _maybe_await(self.legacy(*args, **kwargs))
            raised: Exception | None = None
        except Exception as exc:  # noqa: BLE001 - re-raised to the caller after comparing
            control, raised = _Raised(exc), exc
        job = self._candidate_async(args, kwargs, control, context)
        if runner.options.off_path:
            if len(self._tasks) >= runner.options.queue_size:
                job.close()
                runner._count("dropped")
            else:
                task = asyncio.get_running_loop().create_task(job)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            await job
        if raised is not None:
            raise raised
        return control

    async def _candidate_async(self, args: Any, kwargs: Any, control: Any, context: Any) -> None:
        runner = self.shadow
        started = time.perf_counter()
        try:
            value: Any = await asyncio.wait_for(
                _maybe_await(self.candidate(*args, **kwargs)), runner.options.timeout
            )
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is data
            value, error = None, exc
        runner.compare(control, value, error, time.perf_counter() - started, context)

    async def join_shadow_async(self) -> None:
        """Wait for the async candidate runs still in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def join_shadow(self) -> None:
        """Wait for queued off-path candidate runs (tests, shutdown)."""
        self.shadow.join()

    def close(self) -> None:
        self.shadow.close()


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
