"""Fallback, hedging and fault injection."""

from __future__ import annotations

import asyncio
import random

import pytest

from safeship.resilience import Chaos, ChaosError, Fallback, Hedge, Timeout
from safeship.resilience.testing import FakeClock


def test_fallback_returns_a_value_or_asks_a_callable() -> None:
    def broken() -> str:
        raise ConnectionError("down")

    assert Fallback("default").call(broken) == "default"
    assert Fallback(lambda exc: f"because {exc}").call(broken) == "because down"
    with pytest.raises(ConnectionError):
        Fallback("x", on=(KeyError,)).call(broken)


async def test_async_fallback_may_be_a_coroutine_function() -> None:
    async def broken() -> str:
        raise ConnectionError

    async def local(exc: BaseException) -> str:
        return "local"

    assert await Fallback(local).call_async(broken) == "local"


async def test_a_hedge_wins_when_the_first_attempt_is_slow() -> None:
    attempts = 0
    cancelled = 0

    @Hedge(delay=0.02)
    async def lookup() -> int:
        nonlocal attempts, cancelled
        attempts += 1
        mine = attempts
        try:
            await asyncio.sleep(5 if mine == 1 else 0)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return mine

    assert await asyncio.wait_for(lookup(), 2) == 2
    assert attempts == 2
    assert cancelled == 1


async def test_no_hedge_starts_when_the_first_attempt_is_fast() -> None:
    attempts = 0

    @Hedge(delay=0.5)
    async def lookup() -> str:
        nonlocal attempts
        attempts += 1
        return "fast"

    assert await lookup() == "fast"
    assert attempts == 1


async def test_an_early_failure_starts_the_hedge_at_once_and_all_failing_raises() -> None:
    attempts = 0

    @Hedge(delay=5, max_hedges=2)
    async def lookup() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionError(f"attempt {attempts}")

    with pytest.raises(ConnectionError, match="attempt 3"):
        await asyncio.wait_for(lookup(), 2)
    assert attempts == 3


async def test_the_percentile_delay_follows_observed_latency() -> None:
    hedge = Hedge(delay=1.0, percentile=90, warmup=20, min_delay=0.001)
    for i in range(100):
        hedge.observe(0.01 if i % 10 else 0.5)
    assert 0.01 <= hedge.current_delay() <= 0.5
    assert hedge.current_delay() < 1.0


def test_hedging_refuses_plain_functions() -> None:
    with pytest.raises(TypeError, match="coroutine"):
        Hedge()(lambda: None)


def test_chaos_injects_fresh_exceptions_at_the_configured_rate() -> None:
    chaos = Chaos(rate=0.3, exception=ConnectionError("chaos"), rng=random.Random(3))
    guarded = chaos(lambda: "real")
    seen: list[BaseException] = []
    for _ in range(1000):
        try:
            guarded()
        except ConnectionError as exc:
            seen.append(exc)
    assert 250 <= len(seen) <= 350
    assert len({id(exc) for exc in seen}) == len(seen)


def test_chaos_is_switched_at_run_time_by_a_callable() -> None:
    flag = {"on": False}
    chaos = Chaos(rate=1.0, exception=ChaosError, enabled=lambda: flag["on"])
    guarded = chaos(lambda: "real")
    assert guarded() == "real"
    flag["on"] = True
    with pytest.raises(ChaosError, match="injected fault"):
        guarded()


def test_chaos_latency_and_results(clock: FakeClock) -> None:
    slow = Chaos(rate=1.0, latency=(0.2, 0.2), clock=clock)
    assert slow.call(lambda: "real") == "real"
    assert clock.slept == [0.2]
    lying = Chaos(rate=1.0, result="fake")
    assert lying.call(lambda: "real") == "fake"
    assert Chaos(rate=1.0, result="x", enabled=False).call(lambda: "real") == "real"


async def test_chaos_latency_trips_a_timeout() -> None:
    chaos = Chaos(rate=1.0, latency=1.0)

    async def fast() -> str:
        return "real"

    with pytest.raises(TimeoutError):
        await Timeout(0.02).call_async(chaos.wrap_async(fast))


def test_chaos_needs_something_to_inject() -> None:
    with pytest.raises(ValueError, match="needs something"):
        Chaos(rate=0.5)
