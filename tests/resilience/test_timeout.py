"""Timeouts: the async coarse timer wheel and the sync deadline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from safeship.resilience import DeadlineExceeded, Timeout, current_deadline, deadline, remaining
from safeship.resilience._timeout import _WHEELS
from safeship.resilience.testing import FakeClock


async def test_a_slow_coroutine_is_cancelled_and_raises_deadline_exceeded() -> None:
    cancelled = asyncio.Event()

    @Timeout(0.05)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded, match=r"0\.05 s timeout"):
        await slow()
    elapsed = loop.time() - started
    assert cancelled.is_set()
    assert 0.05 <= elapsed < 1.0
    assert isinstance(DeadlineExceeded(), TimeoutError)


async def test_a_fast_coroutine_returns_and_leaves_the_task_uncancelled() -> None:
    @Timeout(1.0)
    async def fast(value: int) -> int:
        await asyncio.sleep(0)
        return value

    assert await fast(3) == 3
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_an_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    started = asyncio.Event()

    @Timeout(5.0)
    async def wait() -> None:
        started.set()
        await asyncio.sleep(5)

    task = asyncio.create_task(wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_asyncio_timeout_still_wins() -> None:
    @Timeout(5.0)
    async def wait() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await wait()
    assert not isinstance(caught.value, DeadlineExceeded)


async def test_many_concurrent_timeouts_fire_only_for_the_slow_calls() -> None:
    @Timeout(0.1)
    async def call(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    delays = [0.0 if i % 2 else 1.0 for i in range(1000)]
    results = await asyncio.gather(*(call(d) for d in delays), return_exceptions=True)
    timeouts = [r for r in results if isinstance(r, DeadlineExceeded)]
    assert len(timeouts) == 500
    assert results.count(0.0) == 500


async def test_the_wheel_goes_away_when_idle() -> None:
    loop = asyncio.get_running_loop()

    @Timeout(0.02, resolution=0.01)
    async def quick() -> None:
        await asyncio.sleep(0)

    await quick()
    assert any(key[0] is loop for key in _WHEELS)
    await asyncio.sleep(0.1)
    assert not any(key[0] is loop for key in _WHEELS)


async def test_async_with_bounds_a_block() -> None:
    with pytest.raises(DeadlineExceeded):
        async with Timeout(0.03):
            await asyncio.sleep(5)
    async with Timeout(1.0):
        await asyncio.sleep(0)


def test_a_sync_call_sees_its_deadline_and_an_overrun_raises(clock: FakeClock) -> None:
    seen: list[float | None] = []

    @Timeout(2.0, clock=clock)
    def work(seconds: float) -> str:
        seen.append(remaining(clock))
        clock.advance(seconds)
        return "done"

    assert work(1.0) == "done"
    with pytest.raises(DeadlineExceeded, match="2 s timeout"):
        work(2.5)
    assert seen == [2.0, 2.0]
    assert current_deadline() is None


def test_nested_sync_deadlines_keep_the_sooner_one(clock: FakeClock) -> None:
    inner = Timeout(10.0, clock=clock)
    with deadline(3.0, clock=clock):
        assert inner.call(lambda: remaining(clock)) == 3.0


def test_a_passed_enclosing_deadline_skips_the_call(clock: FakeClock) -> None:
    called: list[int] = []
    with deadline(1.0, clock=clock):
        clock.advance(2)
        with pytest.raises(DeadlineExceeded, match="not made"):
            Timeout(5.0, clock=clock).call(called.append, 1)
    assert called == []


def test_sync_with_block_checks_the_overrun(clock: FakeClock) -> None:
    with pytest.raises(DeadlineExceeded), Timeout(1.0, clock=clock):
        clock.advance(1.5)


def test_no_thread_is_started_for_sync_timeouts(clock: FakeClock) -> None:
    before = threading.active_count()
    Timeout(0.5, clock=clock).call(lambda: None)
    assert threading.active_count() == before


def test_bad_timeouts_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"Timeout\.seconds"):
        Timeout(0)
