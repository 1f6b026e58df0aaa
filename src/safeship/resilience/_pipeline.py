"""Compose policies into one, in a fixed and documented order.

``pipeline(...)`` nests the policies you give it, outermost first::

    fallback → retry → rate_limit → breaker → bulkhead → timeout → hedge → chaos → call

Read it from the call outwards: chaos injects faults as the real dependency would;
hedging races attempts within one timeout; the timeout bounds each attempt; the bulkhead
caps concurrent attempts; the breaker judges every attempt and rejects while open; the
rate limiter spends a slot per attempt; retry repeats whole attempts (so each retry is
judged by the breaker and gets a fresh timeout); the fallback answers whatever is left.
Rejections by the rate limiter, breaker or bulkhead are never counted as failures by the
breaker, and an open breaker's rejection is not retried by default.

Retry inside a breaker: while the breaker is CLOSED (or disabled, metrics-only) it judges
every attempt, so a dead dependency opens it after ``threshold`` attempts, not calls.
While it is OPEN or HALF_OPEN, a pipeline call is *one trial*: the breaker moves outside
the retry, admits the call once (or rejects it at once), the retries run inside that one
trial, and the call's final outcome is the trial's verdict. Without this, every attempt
took a trial slot and one failed attempt reopened the breaker, so against a dependency
failing 30% of the time ``Retry(attempts=3)`` could not help it close; with it, a trial
fails only when all three attempts do.

One :class:`Pipeline` serves sync and async code, as a decorator (the signature is kept
for type checkers), as a plain call (``pipe.call(fn, ...)``, ``await pipe.call_async(fn,
...)``) and as a context manager (``with pipe:`` / ``async with pipe:``) — the latter
applies the layers that can guard a block (rate limit, breaker, bulkhead, timeout,
chaos) and refuses retry, fallback and hedging, which need a function to call again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from safeship.resilience._breaker import Breaker
from safeship.resilience._bulkhead import Bulkhead
from safeship.resilience._chaos import Chaos
from safeship.resilience._fallback import Fallback
from safeship.resilience._hedge import Hedge
from safeship.resilience._policy import Guard, GuardedPolicy, Policy
from safeship.resilience._retry import Retry
from safeship.resilience._timeout import Timeout

__all__ = ["ORDER", "Pipeline", "pipeline"]

P = ParamSpec("P")
R = TypeVar("R")
ORDER = ("fallback", "retry", "rate_limit", "breaker", "bulkhead", "timeout", "hedge", "chaos")
"""Layer names, outermost first."""
_NEEDS_A_FUNCTION = ("fallback", "retry", "hedge")


class Pipeline(GuardedPolicy):
    """Policies nested in :data:`ORDER`; build it with :func:`pipeline`."""

    __slots__ = ("_trial_layers", "layers")

    def __init__(self, layers: tuple[tuple[str, Policy], ...]) -> None:
        self.layers = layers
        self._trial_layers = _trial_layers(layers)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={policy!r}" for name, policy in self.layers)
        return f"pipeline({inner})"

    def get(self, layer: str) -> Policy | None:
        """The policy at ``layer`` (one of :data:`ORDER`), or None."""
        return dict(self.layers).get(layer)

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Nest the sync twins, innermost first (see the module docs for retry + breaker)."""
        attempts = _nest_sync(self.layers, fn)
        if self._trial_layers is None:
            return attempts
        breaker, trial_layers = self._trial_layers
        trials = _nest_sync(trial_layers, fn)
        core = breaker._core  # one attribute read per call picks the chain

        def pipeline_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if core.ticket >= 0:
                return attempts(*args, **kwargs)
            return trials(*args, **kwargs)

        return pipeline_call

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Nest the async twins, innermost first (see the module docs for retry + breaker)."""
        attempts = _nest_async(self.layers, fn)
        if self._trial_layers is None:
            return attempts
        breaker, trial_layers = self._trial_layers
        trials = _nest_async(trial_layers, fn)
        core = breaker._core  # one attribute read per call picks the chain

        async def pipeline_call(*args: P.args, **kwargs: P.kwargs) -> R:
            if core.ticket >= 0:
                return await attempts(*args, **kwargs)
            return await trials(*args, **kwargs)

        return pipeline_call

    def guard(self) -> Guard:
        """Guard a block with every layer that can (see the module docs)."""
        refused = [name for name, _ in self.layers if name in _NEEDS_A_FUNCTION]
        if refused:
            raise TypeError(
                f"a pipeline with {', '.join(refused)} cannot guard a `with` block, because "
                "it must call the code again; decorate a function or use pipe.call(fn) instead"
            )
        guards = [policy.guard() for _, policy in self.layers if isinstance(policy, GuardedPolicy)]
        return _PipelineGuard(guards)


def pipeline(
    *,
    fallback: Fallback | Any = None,
    retry: Retry | None = None,
    rate_limit: GuardedPolicy | None = None,
    breaker: Breaker | None = None,
    bulkhead: Bulkhead | None = None,
    timeout: Timeout | float | None = None,
    hedge: Hedge | None = None,
    chaos: Chaos | None = None,
) -> Pipeline:
    """Build a :class:`Pipeline`; ``timeout`` may be seconds, ``fallback`` a plain value.

    A ``fallback`` that is not a :class:`Fallback` becomes ``Fallback(fallback)`` (pass
    ``Fallback(None)`` to fall back to ``None``).
    """
    given: dict[str, Any] = {
        "fallback": fallback
        if fallback is None or isinstance(fallback, Fallback)
        else Fallback(fallback),
        "retry": retry,
        "rate_limit": rate_limit,
        "breaker": breaker,
        "bulkhead": bulkhead,
        "timeout": Timeout(timeout) if isinstance(timeout, int | float) else timeout,
        "hedge": hedge,
        "chaos": chaos,
    }
    layers = []
    for name in ORDER:
        policy = given[name]
        if policy is None:
            continue
        if not isinstance(policy, Policy):
            raise TypeError(f"pipeline({name}=...) must be a resilience policy, got {policy!r}")
        layers.append((name, policy))
    if not layers:
        raise ValueError("pipeline() needs at least one policy, e.g. pipeline(retry=Retry())")
    return Pipeline(tuple(layers))


def _nest_sync(layers: tuple[tuple[str, Policy], ...], fn: Callable[P, R]) -> Callable[P, R]:
    for _, policy in reversed(layers):
        fn = policy.wrap_sync(fn)
    return fn


def _nest_async(
    layers: tuple[tuple[str, Policy], ...], fn: Callable[P, Awaitable[R]]
) -> Callable[P, Awaitable[R]]:
    for _, policy in reversed(layers):
        fn = policy.wrap_async(fn)
    return fn


def _trial_layers(
    layers: tuple[tuple[str, Policy], ...],
) -> tuple[Breaker, tuple[tuple[str, Policy], ...]] | None:
    """The breaker and the layers with it moved just outside the retry, when both are set.

    This chain serves calls while the breaker is not running freely (OPEN, HALF_OPEN,
    FORCED_OPEN): one admission and one verdict per pipeline call.
    """
    named = dict(layers)
    breaker, retry = named.get("breaker"), named.get("retry")
    if not isinstance(breaker, Breaker) or retry is None:
        return None
    moved: list[tuple[str, Policy]] = []
    for name, policy in layers:
        if name == "breaker":
            continue
        if name == "retry":
            moved.append(("breaker", breaker))
        moved.append((name, policy))
    return breaker, tuple(moved)


class _PipelineGuard:
    __slots__ = ("_async_stack", "_guards", "_stack")

    def __init__(self, guards: list[Guard]) -> None:
        self._guards = guards
        self._stack = ExitStack()
        self._async_stack = AsyncExitStack()

    def __enter__(self) -> None:
        with ExitStack() as stack:
            for guard in self._guards:
                stack.enter_context(guard)
            self._stack = stack.pop_all()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._stack.__exit__(et, ev, tb)

    async def __aenter__(self) -> None:
        async with AsyncExitStack() as stack:
            for guard in self._guards:
                await stack.enter_async_context(guard)
            self._async_stack = stack.pop_all()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._async_stack.__aexit__(et, ev, tb)
