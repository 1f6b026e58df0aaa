"""Code the user hands a policy (predicates, listeners, fallbacks) can never wedge it.

A hook that raises counts as a failure of that one call and frees whatever the call
held (a half-open trial permit, a rate-limit slot); the caller still gets the call's own
result or exception, and the hook's error is logged as ``resilience.hook_failed``.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import pytest

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    RateLimiter,
    Retry,
    State,
    pipeline,
)
from safeship.resilience.testing import FakeClock


class DownError(Exception):
    pass


def status_is_5xx(response: Any) -> bool:
    """A typical predicate: it assumes every result is a response dict."""
    return bool(response["status"] >= 500)


def fail() -> None:
    raise DownError


def half_open(breaker: Breaker, clock: FakeClock) -> None:
    for _ in range(5):
        with pytest.raises(DownError):
            breaker.call(fail)
    clock.advance(60)


def test_a_raising_result_predicate_fails_the_trial_and_frees_its_permit(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Breaker(clock=clock, register=False, half_open_calls=1, failure_result=status_is_5xx)
    half_open(breaker, clock)
    assert breaker.call(lambda: None) is None  # the call's result reaches the caller
    assert breaker.state is State.OPEN
    assert breaker.snapshot()["transitions"][-1]["reason"] == "trial calls failed"
    assert "resilience.hook_failed" in caplog.text
    clock.advance(60)
    assert breaker.call(lambda: {"status": 200}) == {"status": 200}
    assert breaker.state is State.CLOSED


async def test_a_raising_result_predicate_frees_the_permit_of_an_async_trial(
    clock: FakeClock,
) -> None:
    breaker = Breaker(clock=clock, register=False, half_open_calls=1, failure_result=status_is_5xx)
    half_open(breaker, clock)

    @breaker
    async def fetch(answer: Any) -> Any:
        await asyncio.sleep(0)
        return answer

    assert await fetch(None) is None
    assert breaker.state is State.OPEN
    clock.advance(60)
    assert await fetch({"status": 200}) == {"status": 200}
    assert breaker.state is State.CLOSED


def test_a_raising_result_predicate_counts_a_closed_call_as_a_failure(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, failure_result=status_is_5xx)
    for _ in range(5):
        assert breaker.call(lambda: "not a response") == "not a response"
    assert breaker.state is State.OPEN
    assert breaker.counts()["failure"] == 5


def test_the_predicate_is_not_asked_about_a_block_or_an_unrecorded_exception(
    clock: FakeClock,
) -> None:
    breaker = Breaker(
        clock=clock, register=False, failure_result=status_is_5xx, record=(DownError,)
    )
    with breaker:
        pass

    def wrong_input() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        breaker.call(wrong_input)
    with pytest.raises(KeyError), breaker:
        raise KeyError("x")
    assert breaker.counts()["success"] == 3
    assert breaker.counts()["failure"] == 0


async def test_the_predicate_is_not_asked_about_an_async_block(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, failure_result=status_is_5xx)
    async with breaker:
        await asyncio.sleep(0)
    assert breaker.counts()["success"] == 1


def test_recording_by_hand_with_a_raising_predicate_frees_the_permit(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, half_open_calls=1, failure_result=status_is_5xx)
    half_open(breaker, clock)
    permit = breaker.allow()
    breaker.record_success(permit, clock.monotonic(), "not a response")
    assert breaker.state is State.OPEN
    clock.advance(60)
    breaker.record_success(breaker.allow(), clock.monotonic(), {"status": 200})
    assert breaker.state is State.CLOSED


def test_a_predicate_raising_a_base_exception_gives_the_permit_back(clock: FakeClock) -> None:
    def interrupted(_: object) -> bool:
        raise KeyboardInterrupt

    breaker = Breaker(clock=clock, register=False, half_open_calls=1, failure_result=interrupted)
    half_open(breaker, clock)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(lambda: "ok")
    assert breaker.state is State.HALF_OPEN
    permit = breaker.allow()  # the slot came back: a new trial is admitted
    breaker.release(permit)


def test_raising_listeners_neither_wedge_nor_fail_the_call(clock: FakeClock) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    breaker = Breaker(clock=clock, register=False, half_open_calls=1, listeners=[broken])
    half_open(breaker, clock)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("where", ["breaker", "pipeline"])
def test_a_raising_fallback_propagates_and_leaves_the_breaker_judging(
    clock: FakeClock, where: str
) -> None:
    def broken_fallback(exc: BaseException) -> str:
        raise LookupError("fallback bug")

    if where == "breaker":
        breaker = Breaker(clock=clock, register=False, half_open_calls=1, fallback=broken_fallback)
        guarded = breaker(fail)
    else:
        breaker = Breaker(clock=clock, register=False, half_open_calls=1)
        guarded = pipeline(fallback=broken_fallback, breaker=breaker)(fail)
    for _ in range(5):
        with pytest.raises(LookupError):
            guarded()
    clock.advance(60)
    with pytest.raises(LookupError):
        guarded()  # the trial failed: recorded before the fallback ran
    assert breaker.state is State.OPEN
    clock.advance(60)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is State.CLOSED


# -- retry -----------------------------------------------------------------------------


def broken_predicate(_: object) -> NoReturn:
    raise RuntimeError("predicate bug")


def test_a_raising_result_check_returns_the_result_without_retrying(clock: FakeClock) -> None:
    calls: list[int] = []

    def answer() -> str:
        calls.append(1)
        return "value"

    retry = Retry(attempts=3, retry_if_result=broken_predicate, clock=clock)
    assert retry.call(answer) == "value"
    assert len(calls) == 1


async def test_a_raising_async_result_check_returns_the_result(clock: FakeClock) -> None:
    async def answer() -> str:
        return "value"

    retry = Retry(attempts=3, retry_if_result=broken_predicate, clock=clock)
    assert await retry.call_async(answer) == "value"


def test_a_raising_retry_on_predicate_gives_up_with_the_call_s_own_error(
    clock: FakeClock,
) -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise DownError

    retry = Retry(attempts=3, retry_on=broken_predicate, clock=clock)
    with pytest.raises(DownError):
        retry.call(down)
    assert len(calls) == 1


def test_raising_on_retry_and_discard_hooks_do_not_stop_the_retries(clock: FakeClock) -> None:
    answers = iter(["busy", "busy", "done"])

    def broken_hook(_: object) -> None:
        raise RuntimeError("hook bug")

    retry = Retry(
        attempts=3,
        retry_if_result=lambda value: value == "busy",
        on_retry=broken_hook,
        discard_result=broken_hook,
        clock=clock,
    )
    assert retry.call(lambda: next(answers)) == "done"


async def test_raising_async_hooks_do_not_stop_the_retries(clock: FakeClock) -> None:
    answers = iter(["busy", "done"])

    async def broken_discard(_: object) -> None:
        raise RuntimeError("hook bug")

    async def answer() -> str:
        return next(answers)

    retry = Retry(
        attempts=3,
        retry_if_result=lambda value: value == "busy",
        on_retry=broken_predicate,
        discard_result=broken_discard,
        clock=clock,
    )
    assert await retry.call_async(answer) == "done"


# -- rate limiter --------------------------------------------------------------------


class HeldClock(FakeClock):
    """A fake clock whose async sleeps wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()

    async def sleep_async(self, seconds: float) -> None:
        self.sleeping.set()
        await asyncio.Event().wait()


async def test_a_wait_cancelled_before_the_call_gives_the_slot_back() -> None:
    clock = HeldClock()
    limiter = RateLimiter(rate=1, burst=1, max_wait=10, clock=clock)
    assert limiter.try_acquire()
    waiting = asyncio.create_task(limiter.acquire_async())
    await clock.sleeping.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.reserve() == pytest.approx(1.0)  # the cancelled caller's slot, free again


def test_a_sync_wait_interrupted_before_the_call_gives_the_slot_back() -> None:
    class InterruptedClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise KeyboardInterrupt

    limiter = RateLimiter(rate=1, burst=1, max_wait=10, clock=InterruptedClock())
    assert limiter.try_acquire()
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire()
    assert limiter.reserve() == pytest.approx(1.0)


def test_a_rejected_call_is_never_admitted_by_a_wedged_breaker(clock: FakeClock) -> None:
    """After every kind of hook failure above, an open breaker still rejects normally."""
    breaker = Breaker(clock=clock, register=False, failure_result=broken_predicate)
    for _ in range(5):
        breaker.call(lambda: "x")
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: "x")
