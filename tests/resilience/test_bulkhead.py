"""Bulkhead: bounded concurrency, a bounded FIFO queue, wait timeouts, sync and async."""

from __future__ import annotations

import asyncio
import threading

import pytest

from safeship.resilience import Bulkhead, BulkheadFull


def test_threads_beyond_the_limit_queue_and_beyond_the_queue_are_rejected() -> None:
    bulkhead = Bulkhead(max_concurrent=2, max_queued=2, max_wait=5)
    release = threading.Event()
    inside = threading.Semaphore(0)
    peak = 0
    lock = threading.Lock()

    @bulkhead
    def work() -> None:
        nonlocal peak
        with lock:
            peak = max(peak, bulkhead.active)
        inside.release()
        release.wait(10)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    inside.acquire(timeout=5)
    inside.acquire(timeout=5)
    while bulkhead.queued < 2:
        threading.Event().wait(0.001)
    with pytest.raises(BulkheadFull):
        work()
    release.set()
    for thread in threads:
        thread.join(10)
    assert peak == 2
    assert bulkhead.active == 0
    assert bulkhead.queued == 0


def test_a_queued_thread_gives_up_after_max_wait() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1, max_wait=0.05)
    bulkhead.acquire()
    with pytest.raises(BulkheadFull):
        bulkhead.acquire()
    assert bulkhead.queued == 0
    bulkhead.release()
    bulkhead.acquire()
    bulkhead.release()
    assert bulkhead.active == 0


async def test_tasks_are_capped_and_served_first_come_first_served() -> None:
    bulkhead = Bulkhead(max_concurrent=2, max_queued=10, max_wait=5)
    order: list[int] = []
    gate = asyncio.Event()

    @bulkhead
    async def work(index: int) -> None:
        order.append(index)
        await gate.wait()

    tasks = [asyncio.create_task(work(i)) for i in range(6)]
    while len(order) < 2:  # noqa: ASYNC110 - yield until every task ran once
        await asyncio.sleep(0)
    assert bulkhead.active == 2
    assert bulkhead.queued == 4
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert bulkhead.active == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queued=5, max_wait=5)
    await bulkhead.acquire_async()
    waiter = asyncio.create_task(bulkhead.acquire_async())
    await asyncio.sleep(0.01)
    assert bulkhead.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.queued == 0
    bulkhead.release()
    assert bulkhead.active == 0


async def test_an_async_waiter_times_out() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1, max_wait=0.02)
    await bulkhead.acquire_async()
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire_async()
    bulkhead.release()
    assert (bulkhead.active, bulkhead.queued) == (0, 0)


async def test_a_slot_freed_by_a_thread_wakes_a_waiting_task() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1, max_wait=5)
    bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire_async())
    await asyncio.sleep(0.01)
    threading.Thread(target=bulkhead.release).start()
    await asyncio.wait_for(waiter, 5)
    assert bulkhead.active == 1
    bulkhead.release()


async def test_async_with_holds_a_slot() -> None:
    bulkhead = Bulkhead(max_concurrent=1)
    async with bulkhead:
        assert bulkhead.active == 1
        with pytest.raises(BulkheadFull):
            await bulkhead.acquire_async()
    assert bulkhead.active == 0


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"Bulkhead\.max_concurrent"):
        Bulkhead(max_concurrent=0)
