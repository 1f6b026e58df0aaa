"""Retry inside a breaker: while the breaker tests a dependency, a pipeline call is one trial.

The report this holds: against a dependency failing 30% of the time, ``Retry(3)`` plus the
default breaker kept reopening in half-open, because every attempt took a trial slot and
one failed attempt reopened the breaker. Now a half-open trial is the whole pipeline call
(its retries included), while a closed breaker still judges every attempt.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from safeship.resilience import Breaker, BreakerOpen, Constant, Retry, State, pipeline
from safeship.resilience.testing import FakeClock


class FlakyError(Exception):
    pass


def _half_open(breaker: Breaker, clock: FakeClock) -> None:
    if breaker.state is not State.CLOSED:
        breaker.reset()
    assert breaker.open_for(60, reason="test outage")
    clock.advance(60)


def test_a_failed_attempt_retried_to_success_is_a_successful_trial(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    pipe = pipeline(retry=Retry(attempts=3, schedule=Constant(0.1), clock=clock), breaker=breaker)
    script: list[Exception | str] = [FlakyError(), "ok", "ok"]
    calls: list[Exception | str] = []

    @pipe
    def fetch() -> str:
        step = script[len(calls)]
        calls.append(step)
        if isinstance(step, Exception):
            raise step
        return step

    _half_open(breaker, clock)
    assert fetch() == "ok"  # the first trial's first attempt failed, its retry answered
    assert breaker.state is State.HALF_OPEN
    assert fetch() == "ok"
    assert breaker.state is State.CLOSED
    assert len(calls) == 3
    assert breaker.counts()["failure"] == 0  # one verdict per trial: two successes


async def test_async_trials_count_one_pipeline_call(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    pipe = pipeline(retry=Retry(attempts=3, schedule=Constant(0.1), clock=clock), breaker=breaker)
    failures = iter([True, False, True, False])

    @pipe
    async def fetch() -> str:
        if next(failures):
            raise FlakyError
        return "ok"

    _half_open(breaker, clock)
    assert await fetch() == "ok"
    assert await fetch() == "ok"
    assert breaker.state is State.CLOSED


def test_a_trial_whose_retries_all_fail_reopens_and_an_open_breaker_calls_nothing(
    clock: FakeClock,
) -> None:
    breaker = Breaker(clock=clock, register=False)
    pipe = pipeline(retry=Retry(attempts=3, schedule=Constant(0.1), clock=clock), breaker=breaker)
    calls = 0

    @pipe
    def fetch() -> str:
        nonlocal calls
        calls += 1
        raise FlakyError

    _half_open(breaker, clock)
    with pytest.raises(FlakyError):
        fetch()
    assert calls == 3
    assert breaker.state is State.OPEN
    with pytest.raises(BreakerOpen):
        fetch()  # rejected at once: no attempt, no retry
    assert calls == 3


def test_a_closed_breaker_still_judges_every_attempt(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)  # opens after 5 failures in a row
    pipe = pipeline(retry=Retry(attempts=3, schedule=Constant(0.1), clock=clock), breaker=breaker)
    calls = 0

    @pipe
    def fetch() -> str:
        nonlocal calls
        calls += 1
        raise FlakyError

    with pytest.raises(FlakyError):
        fetch()
    with pytest.raises(BreakerOpen):
        fetch()  # attempts 4 and 5 opened it; the 6th is rejected, not retried
    assert calls == 5
    assert breaker.state is State.OPEN


def test_against_a_30_percent_failing_dependency_half_open_trials_mostly_close(
    clock: FakeClock,
) -> None:
    """The reported scenario, driven by a fake clock: 300 half-open episodes.

    Per attempt the dependency fails with p = 0.3. When each attempt was a trial, two
    trials closed the breaker with p = 0.7**2 = 0.49; as one pipeline call each, a trial
    fails only when 3 attempts do, and two close it with p = (1 - 0.3**3)**2 ~ 0.95.
    """
    rng = random.Random(15)
    breaker = Breaker(clock=clock, register=False)
    retry = Retry(attempts=3, clock=clock, rng=random.Random(7))
    pipe = pipeline(retry=retry, breaker=breaker)

    @pipe
    def fetch() -> str:
        clock.advance(0.05)
        if rng.random() < 0.3:
            raise FlakyError
        return "ok"

    closed = 0
    episodes = 300
    for _ in range(episodes):
        _half_open(breaker, clock)
        first = True  # the first call finds it OPEN with its time up and turns it HALF_OPEN
        while first or breaker.state is State.HALF_OPEN:
            first = False
            with contextlib.suppress(FlakyError, BreakerOpen):
                fetch()
        closed += breaker.state is State.CLOSED
    assert closed / episodes >= 0.85, closed
