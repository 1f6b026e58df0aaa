"""Rejecting while open is cheap and leaves nothing behind, however long it lasts."""

from __future__ import annotations

import asyncio
import gc
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


def _retained_after_each_chunk(run: Callable[[int], None]) -> list[int]:
    """Bytes still allocated (after a collection) once each chunk of rejections is done.

    Counted by tracemalloc, not timed, so a busy machine cannot change the figures.
    """
    run(2_000)  # warm up caches and lazily created objects
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        retained = []
        for _ in range(CHUNKS):
            run(REJECTIONS // CHUNKS)
            gc.collect()
            retained.append(tracemalloc.get_traced_memory()[0] - baseline)
    finally:
        tracemalloc.stop()
    return retained


def _assert_flat(retained: list[int]) -> None:
    assert max(retained) < 64 * 1024, f"bytes retained per chunk of rejections: {retained}"
    growth = retained[-1] - retained[0]
    assert growth < 4 * 1024, f"memory grew with each chunk of rejections: {retained}"


def test_a_hundred_thousand_rejections_leave_memory_flat(clock: FakeClock) -> None:
    breaker = _open_breaker(clock)
    guarded = breaker(lambda: "never called")
    _assert_flat(_retained_after_each_chunk(lambda n: _reject_sync(guarded, n)))
    assert breaker.counts()["rejected"] == REJECTIONS + 2_000


def test_rejections_answered_by_a_fallback_stay_flat_too(clock: FakeClock) -> None:
    breaker = _open_breaker(clock, fallback="cached")
    guarded = breaker(lambda: "never called")

    def run(times: int) -> None:
        for _ in range(times):
            assert guarded() == "cached"

    _assert_flat(_retained_after_each_chunk(run))


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
        retained = _retained_after_each_chunk(lambda n: loop.run_until_complete(reject(n)))
    finally:
        loop.close()
    _assert_flat(retained)
    assert breaker.counts()["rejected"] == REJECTIONS + 2_000


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
