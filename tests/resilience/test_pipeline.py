"""pipeline(): documented order, one object for sync and async, three ways to use it."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    Bulkhead,
    BulkheadFull,
    Chaos,
    Constant,
    DeadlineExceeded,
    Fallback,
    Hedge,
    RateLimiter,
    Retry,
    State,
    Timeout,
    pipeline,
)
from safeship.resilience._pipeline import ORDER
from safeship.resilience.testing import FakeClock


class DownError(Exception):
    pass


def test_layers_are_nested_in_the_documented_order(clock: FakeClock) -> None:
    pipe = pipeline(
        chaos=Chaos(rate=0, exception=DownError),
        timeout=1.0,
        bulkhead=Bulkhead(max_concurrent=1),
        breaker=Breaker(clock=clock, register=False),
        rate_limit=RateLimiter(rate=100, clock=clock),
        retry=Retry(),
        fallback="x",
    )
    assert [name for name, _ in pipe.layers] == [n for n in ORDER if n != "hedge"]
    assert ORDER == (
        "fallback", "retry", "rate_limit", "breaker", "bulkhead", "timeout", "hedge", "chaos",
    )  # fmt: skip


def test_each_retry_is_judged_by_the_breaker_and_the_fallback_answers_last(
    clock: FakeClock,
) -> None:
    breaker = Breaker(clock=clock, register=False)
    calls = 0

    @pipeline(
        fallback=lambda exc: f"fallback after {type(exc).__name__}",
        retry=Retry(attempts=10, schedule=Constant(0), clock=clock),
        breaker=breaker,
    )
    def send(message: str) -> str:
        nonlocal calls
        calls += 1
        raise DownError(message)

    assert send("hi") == "fallback after BreakerOpen"
    assert calls == 5
    assert breaker.state is State.OPEN


def test_a_full_bulkhead_is_not_a_breaker_failure(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, window=None)
    bulkhead = Bulkhead(max_concurrent=1)
    pipe = pipeline(breaker=breaker, bulkhead=bulkhead)
    bulkhead.acquire()
    for _ in range(10):
        with pytest.raises(BulkheadFull):
            pipe.call(lambda: None)
    assert breaker.state is State.CLOSED
    bulkhead.release()


async def test_one_pipeline_serves_sync_and_async_functions(clock: FakeClock) -> None:
    pipe = pipeline(retry=Retry(attempts=3, schedule=Constant(0)), breaker=Breaker(register=False))
    attempts = {"sync": 0, "async": 0}

    @pipe
    def sync_fetch(key: str) -> str:
        attempts["sync"] += 1
        if attempts["sync"] < 2:
            raise ConnectionError
        return key.upper()

    @pipe
    async def async_fetch(key: str) -> str:
        attempts["async"] += 1
        if attempts["async"] < 2:
            raise ConnectionError
        await asyncio.sleep(0)
        return key.lower()

    assert sync_fetch("a") == "A"
    assert await async_fetch("B") == "b"
    assert inspect.iscoroutinefunction(async_fetch)
    assert not inspect.iscoroutinefunction(sync_fetch)
    assert pipe.call(str.upper, "c") == "C"
    assert await pipe.call_async(asyncio.sleep, 0, "d") == "d"


async def test_a_timeout_inside_the_retry_bounds_each_attempt() -> None:
    attempts = 0

    @pipeline(retry=Retry(attempts=3, schedule=Constant(0)), timeout=0.03)
    async def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(5 if attempts < 3 else 0)
        return "finally"

    assert await slow_then_fast() == "finally"
    assert attempts == 3


async def test_hedging_runs_inside_the_timeout() -> None:
    attempts = 0

    @pipeline(timeout=1.0, hedge=Hedge(delay=0.01))
    async def lookup() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(5 if attempts == 1 else 0)
        return attempts

    assert await lookup() == 2


def test_context_manager_guards_a_block_with_breaker_and_timeout(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    guard = pipeline(breaker=breaker, timeout=Timeout(5, clock=clock))
    for _ in range(5):
        with pytest.raises(DownError), guard:
            raise DownError
    with pytest.raises(BreakerOpen), guard:
        pass
    breaker.reset()
    with pytest.raises(DeadlineExceeded), guard:
        clock.advance(6)


async def test_async_context_manager_guards_a_block() -> None:
    guard = pipeline(
        breaker=Breaker(register=False), bulkhead=Bulkhead(max_concurrent=1), timeout=0.02
    )
    with pytest.raises(DeadlineExceeded):
        async with guard:
            await asyncio.sleep(5)
    async with guard:
        await asyncio.sleep(0)


def test_a_context_manager_refuses_retry_and_fallback() -> None:
    with (
        pytest.raises(TypeError, match=r"retry, fallback|fallback, retry"),
        pipeline(retry=Retry(), fallback=1),
    ):
        pass


def test_pipeline_needs_policies() -> None:
    with pytest.raises(ValueError, match="at least one policy"):
        pipeline()
    with pytest.raises(TypeError, match="must be a resilience policy"):
        pipeline(breaker="payments")  # type: ignore[arg-type]


def test_fallback_shorthand_and_explicit_none() -> None:
    def broken() -> None:
        raise DownError

    assert pipeline(fallback="x").call(broken) == "x"
    assert pipeline(fallback=Fallback(None)).call(broken) is None
