"""Under concurrency: exact half-open admission, overlapping closed calls, consistent counts."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable

import pytest

from safeship.resilience import Breaker, BreakerOpen, CountWindow, State, TimeWindow
from safeship.resilience.testing import FakeClock


class DownError(Exception):
    pass


def half_open_breaker(clock: FakeClock, trials: int) -> Breaker:
    """A breaker whose open time is up: the next calls decide who gets a trial."""
    breaker = Breaker(clock=clock, register=False, half_open_calls=trials)
    breaker.force_open()
    breaker.reset()
    for _ in range(5):
        with pytest.raises(DownError):
            breaker.call(_fail)
    clock.advance(60)
    return breaker


def _fail() -> None:
    raise DownError


@pytest.mark.parametrize("trials", [1, 3])
def test_sixteen_threads_on_a_half_open_breaker_run_exactly_the_permitted_trials(
    clock: FakeClock, trials: int
) -> None:
    breaker = half_open_breaker(clock, trials)
    start = threading.Barrier(16)
    release = threading.Event()
    ran: list[int] = []
    rejected: list[int] = []
    lock = threading.Lock()

    @breaker
    def trial(index: int) -> None:
        with lock:
            ran.append(index)
        release.wait(10)

    def worker(index: int) -> None:
        start.wait(10)
        try:
            trial(index)
        except BreakerOpen:
            with lock:
                rejected.append(index)
            if len(rejected) == 16 - trials:
                release.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(ran) == trials
    assert len(rejected) == 16 - trials
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("trials", [1, 5])
async def test_a_thousand_tasks_on_a_half_open_breaker_run_exactly_the_permitted_trials(
    clock: FakeClock, trials: int
) -> None:
    breaker = half_open_breaker(clock, trials)
    release = asyncio.Event()
    ran = 0

    @breaker
    async def trial() -> None:
        nonlocal ran
        ran += 1
        await release.wait()

    async def worker() -> bool:
        await asyncio.sleep(0)
        try:
            await trial()
        except BreakerOpen:
            return False
        return True

    tasks = [asyncio.create_task(worker()) for _ in range(1000)]
    while ran < trials or sum(t.done() for t in tasks) < 1000 - trials:  # noqa: ASYNC110 - yield until every task ran once
        await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*tasks)
    assert ran == trials
    assert sum(outcomes) == trials
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("window", [None, TimeWindow(60), CountWindow(100)])
def test_closed_calls_overlap_instead_of_queueing_on_a_lock(
    clock: FakeClock, window: TimeWindow | CountWindow | None
) -> None:
    breaker = Breaker(clock=clock, register=False, window=window)
    together = threading.Barrier(8, timeout=10)
    active = 0
    peak = 0
    lock = threading.Lock()

    @breaker
    def call() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        together.wait()  # every call must be inside at once, or this times out
        with lock:
            active -= 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert peak == 8
    assert not together.broken


def test_counts_stay_consistent_under_a_thread_storm(clock: FakeClock) -> None:
    breaker = Breaker(
        clock=clock,
        register=False,
        window=CountWindow(50, minimum_calls=50, failure_rate=0.9),
        open_duration=0.001,
    )
    per_thread = 2000
    outcomes: list[Callable[[], None]] = [lambda: None, _fail]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_thread):
            with contextlib.suppress(DownError, BreakerOpen):
                breaker.call(rng.choice(outcomes))
            if rng.random() < 0.01:
                clock.advance(0.001)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    counts = breaker.counts()
    recorded = sum(counts[k] for k in ("success", "failure", "slow_success", "slow_failure"))
    assert recorded + counts["ignored"] + counts["rejected"] == 16 * per_thread
    assert breaker.state in (State.CLOSED, State.OPEN, State.HALF_OPEN)
