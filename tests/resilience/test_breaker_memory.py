"""Rejecting while open is cheap and leaves nothing behind, however long it lasts."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import pytest

from safeship.resilience import Breaker, BreakerOpen
from safeship.resilience.testing import FakeClock

REJECTIONS = 100_000
CHUNKS = 10


def _open_breaker(clock: FakeClock, **options: object) -> Breaker:
    breaker = Breaker(clock=clock, register=False, **options)  # type: ignore[arg-type]
    breaker.force_open()
    breaker.reset()
    for _ in range(5):
        breaker.record_failure(breaker.allow())
    return breaker


def _reject_sync(call: Callable[[], object], times: int) -> None:
    for _ in range(times):
        try:  # noqa: SIM105 - plain try is what callers write; suppress() allocates per call
            call()
        except BreakerOpen:
            pass


def _measure(run: Callable[[int], None]) -> tuple[int, list[float]]:
    """Bytes still allocated after REJECTIONS rejections, and the time of each chunk."""
    run(2_000)  # warm up caches and lazily created objects
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        chunk_times = []
        for _ in range(CHUNKS):
            started = time.perf_counter()
            run(REJECTIONS // CHUNKS)
            chunk_times.append(time.perf_counter() - started)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown, chunk_times


def _assert_flat(grown: int, chunk_times: list[float]) -> None:
    assert grown < 64 * 1024, f"{grown} bytes retained after {REJECTIONS} rejections"
    early = statistics.median(chunk_times[:3])
    late = statistics.median(chunk_times[-3:])
    assert late < early * 2, f"rejections slowed down: {early:.4f}s → {late:.4f}s per chunk"


def test_a_hundred_thousand_rejections_leave_memory_and_time_flat(clock: FakeClock) -> None:
    breaker = _open_breaker(clock)
    guarded = breaker(lambda: "never called")
    _assert_flat(*_measure(lambda n: _reject_sync(guarded, n)))
    assert breaker.counts()["rejected"] == REJECTIONS + 2_000


def test_rejections_answered_by_a_fallback_stay_flat_too(clock: FakeClock) -> None:
    breaker = _open_breaker(clock, fallback="cached")
    guarded = breaker(lambda: "never called")

    def run(times: int) -> None:
        for _ in range(times):
            assert guarded() == "cached"

    _assert_flat(*_measure(run))


def test_async_rejections_stay_flat(clock: FakeClock) -> None:
    breaker = _open_breaker(clock)

    @breaker
    async def never() -> str:
        return "never called"

    async def reject(times: int) -> None:
        for _ in range(times):
            try:  # noqa: SIM105 - plain try is what callers write; suppress() allocates per call
                await never()
            except BreakerOpen:
                pass

    loop = asyncio.new_event_loop()
    try:
        _assert_flat(*_measure(lambda n: loop.run_until_complete(reject(n))))
    finally:
        loop.close()


def test_each_rejection_is_a_fresh_exception_without_history(clock: FakeClock) -> None:
    breaker = _open_breaker(clock)
    guarded = breaker(lambda: None)
    seen = []
    for _ in range(3):
        with pytest.raises(BreakerOpen) as caught:
            guarded()
        seen.append(caught.value)
    assert len({id(exc) for exc in seen}) == 3
    depths = []
    for exc in seen:
        depth, tb = 0, exc.__traceback__
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        depths.append(depth)
    assert len(set(depths)) == 1
