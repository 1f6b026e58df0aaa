"""Retry: schedules, classification, Retry-After, deadlines, budgets and testing mode."""

from __future__ import annotations

import contextlib
import email.utils
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    Constant,
    DecorrelatedJitter,
    EqualJitter,
    Exponential,
    FullJitter,
    Linear,
    RateLimited,
    Retry,
    RetryBudget,
    RetryEvent,
    deadline,
    is_permanent,
    retry_after_hint,
)
from safeship.resilience.testing import FakeClock, instant_retries


class Flaky:
    """Fails ``failures`` times with ``error`` (or returns ``bad``), then returns "ok"."""

    def __init__(self, failures: int, error: BaseException | None = None, bad: Any = None) -> None:
        self.failures = failures
        self.error = error if error is not None else ConnectionError("blip")
        self.bad = bad
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            if self.bad is not None:
                return self.bad
            raise self.error
        return "ok"


class HTTPError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers or {}})()


def test_retries_until_success_with_full_jitter_delays(clock: FakeClock) -> None:
    flaky = Flaky(2)
    retry = Retry(attempts=3, clock=clock, rng=random.Random(1))
    assert retry.call(flaky) == "ok"
    assert flaky.calls == 3
    assert len(clock.slept) == 2
    assert 0 <= clock.slept[0] <= 0.1
    assert 0 <= clock.slept[1] <= 0.2


def test_gives_up_after_the_attempts_and_reraises_the_last_error(clock: FakeClock) -> None:
    flaky = Flaky(5)
    with pytest.raises(ConnectionError, match="blip"):
        Retry(attempts=3, clock=clock).call(flaky)
    assert flaky.calls == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_never_retries_a_client_error(clock: FakeClock, status: int) -> None:
    flaky = Flaky(5, HTTPError(status))
    with pytest.raises(HTTPError):
        Retry(attempts=5, clock=clock).call(flaky)
    assert flaky.calls == 1
    assert is_permanent(HTTPError(status))


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retries_retryable_statuses(clock: FakeClock, status: int) -> None:
    flaky = Flaky(2, HTTPError(status))
    assert Retry(attempts=3, clock=clock).call(flaky) == "ok"
    assert not is_permanent(HTTPError(status))


def test_an_exception_can_declare_itself_permanent(clock: FakeClock) -> None:
    error = RuntimeError("invalid card")
    error.retryable = False  # type: ignore[attr-defined]
    flaky = Flaky(3, error)
    with pytest.raises(RuntimeError):
        Retry(attempts=5, clock=clock).call(flaky)
    assert flaky.calls == 1


def test_retry_on_types_and_predicates(clock: FakeClock) -> None:
    only_timeouts = Retry(attempts=3, retry_on=TimeoutError, clock=clock)
    with pytest.raises(ConnectionError):
        only_timeouts.call(Flaky(1))
    predicate = Retry(attempts=3, retry_on=lambda exc: "blip" in str(exc), clock=clock)
    assert predicate.call(Flaky(2)) == "ok"


def test_an_open_breaker_is_not_retried_by_default(clock: FakeClock) -> None:
    flaky = Flaky(5, BreakerOpen("payments", 30.0))
    with pytest.raises(BreakerOpen):
        Retry(attempts=5, clock=clock).call(flaky)
    assert flaky.calls == 1


def test_retries_a_result_and_discards_it(clock: FakeClock) -> None:
    discarded: list[int] = []
    retry = Retry(
        attempts=3,
        clock=clock,
        retry_if_result=lambda status: status == 503,
        discard_result=discarded.append,
    )
    assert retry.call(Flaky(2, bad=503)) == "ok"
    assert discarded == [503, 503]
    exhausted = Flaky(5, bad=503)
    assert retry.call(exhausted) == 503  # out of attempts: the last result comes back
    assert exhausted.calls == 3


def test_retry_after_seconds_is_honoured(clock: FakeClock) -> None:
    flaky = Flaky(1, HTTPError(429, {"Retry-After": "7"}))
    Retry(attempts=2, clock=clock).call(flaky)
    assert clock.slept == [7.0]


def test_retry_after_http_date_is_honoured() -> None:
    when = email.utils.formatdate(1_700_000_030, usegmt=True)
    assert retry_after_hint(HTTPError(503, {"Retry-After": when}), now=1_700_000_000) == 30


def test_rate_limited_rejection_carries_its_own_hint(clock: FakeClock) -> None:
    flaky = Flaky(1, RateLimited("api", 2.5))
    Retry(attempts=2, clock=clock).call(flaky)
    assert clock.slept == [2.5]


def test_a_retry_after_beyond_the_limit_gives_up_at_once(clock: FakeClock) -> None:
    flaky = Flaky(1, HTTPError(503, {"Retry-After": "3600"}))
    with pytest.raises(HTTPError):
        Retry(attempts=3, clock=clock, max_retry_after=60).call(flaky)
    assert clock.slept == []


def test_the_deadline_stops_retrying_before_it_would_be_crossed(clock: FakeClock) -> None:
    flaky = Flaky(10)
    retry = Retry(attempts=10, schedule=Constant(1.0), deadline=3.5, clock=clock)
    with pytest.raises(ConnectionError):
        retry.call(flaky)
    assert clock.slept == [1.0, 1.0, 1.0]
    assert flaky.calls == 4


def test_an_enclosing_deadline_also_stops_retrying(clock: FakeClock) -> None:
    flaky = Flaky(10)
    retry = Retry(attempts=10, schedule=Constant(1.0), clock=clock)
    with deadline(2.5, clock=clock), pytest.raises(ConnectionError):
        retry.call(flaky)
    assert clock.slept == [1.0, 1.0]


def test_on_retry_sees_each_failed_attempt(clock: FakeClock) -> None:
    events: list[RetryEvent] = []
    retry = Retry(attempts=3, schedule=Constant(0.5), clock=clock, on_retry=events.append)
    retry.call(Flaky(2))
    assert [(e.attempt, e.delay) for e in events] == [(1, 0.5), (2, 0.5)]
    assert all(isinstance(e.exception, ConnectionError) for e in events)


async def test_async_retry_awaits_between_attempts(clock: FakeClock) -> None:
    calls = 0

    @Retry(attempts=4, schedule=Constant(0.25), clock=clock)
    async def fetch(value: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError
        return value * 2

    assert await fetch(21) == 42
    assert clock.slept == [0.25, 0.25]


async def test_async_retry_awaits_an_async_discard(clock: FakeClock) -> None:
    closed: list[int] = []

    async def close(result: int) -> None:
        closed.append(result)

    retry = Retry(attempts=2, clock=clock, retry_if_result=lambda r: r == 503, discard_result=close)

    async def answer() -> int:
        return 503

    assert await retry.call_async(answer) == 503
    assert closed == [503]


def test_the_budget_caps_retries_to_a_share_of_calls(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, window=10, min_per_second=0, clock=clock)
    retry = Retry(attempts=2, schedule=Constant(0), budget=budget, clock=clock)
    retried = 0
    for _ in range(100):
        flaky = Flaky(1)
        with contextlib.suppress(ConnectionError):
            retry.call(flaky)
        retried += flaky.calls - 1
    assert retried == 10
    assert budget.figures() == (100, 10)
    clock.advance(11)
    assert budget.figures() == (0, 0)


def test_the_budget_floor_lets_a_quiet_service_retry(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.0, window=10, min_per_second=0.5, clock=clock)
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]


def test_testing_mode_removes_sleeps_and_fixes_jitter() -> None:
    def run() -> list[float]:
        with instant_retries(seed=7) as sleeps:
            Retry(attempts=5).call(Flaky(4))
            return list(sleeps)

    first, second = run(), run()
    assert first == second
    assert len(first) == 4


@given(retry=st.integers(1, 40), previous=st.floats(0, 100), seed=st.integers(0, 2**32))
def test_every_schedule_stays_within_its_documented_bounds(
    retry: int, previous: float, seed: int
) -> None:
    rng = random.Random(seed)
    growth = min(10.0, 0.1 * 2 ** (retry - 1))
    assert 0 <= FullJitter().delay(retry, previous, rng) <= growth
    assert growth / 2 <= EqualJitter().delay(retry, previous, rng) <= growth
    assert 0.1 <= DecorrelatedJitter().delay(retry, previous, rng) <= 10.0
    assert Exponential().delay(retry, previous, rng) == growth
    assert Linear().delay(retry, previous, rng) == min(10.0, 0.1 * retry)
    assert Constant(0.3).delay(retry, previous, rng) == 0.3


def test_a_huge_retry_number_does_not_overflow() -> None:
    assert Exponential(cap=5.0).delay(10_000, 0.0, random.Random()) == 5.0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"deadline": -1}, ValueError),
        ({"retry_on": ("ConnectionError",)}, TypeError),
        ({"retry_if_result": 5}, TypeError),
    ],
)
def test_bad_settings_fail_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Retry"):
        Retry(**options)


def test_budget_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"RetryBudget\.window"):
        RetryBudget(window=0)


def test_schedule_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"FullJitter\.base"):
        FullJitter(base=0)


def test_a_breaker_inside_a_retry_sees_every_attempt(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    flaky = Flaky(10)
    with pytest.raises(BreakerOpen):
        Retry(attempts=10, schedule=Constant(0), never_on=(), retry_on=(ConnectionError,),
              clock=clock).call(breaker(flaky))  # fmt: skip
    assert flaky.calls == 5
