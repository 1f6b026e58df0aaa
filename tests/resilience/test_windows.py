"""The judging windows: thresholds, minimum calls, eviction, and exact rates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.resilience import ConsecutiveFailures, CountWindow, TimeWindow
from safeship.resilience._windows import FAILURE, SLOW, SUCCESS


def test_consecutive_failures_open_after_a_run_and_a_success_resets_it() -> None:
    state = ConsecutiveFailures(3).new_state()
    assert not state.record(0, FAILURE)
    assert not state.record(0, FAILURE)
    assert not state.record(0, SUCCESS)
    assert not state.record(0, FAILURE)
    assert not state.record(0, FAILURE)
    assert state.record(0, FAILURE)


def test_count_window_waits_for_the_minimum_number_of_calls() -> None:
    state = CountWindow(10, minimum_calls=4, failure_rate=0.5).new_state()
    for _ in range(3):
        assert not state.record(0, FAILURE)
    assert state.record(0, SUCCESS)  # 3 of 4 failed once the minimum is reached


def test_count_window_rate_is_exact_at_the_threshold() -> None:
    state = CountWindow(10, failure_rate=0.7).new_state()
    for _ in range(3):
        state.record(0, SUCCESS)
    results = [state.record(0, FAILURE) for _ in range(7)]
    assert results == [False] * 6 + [True]  # 7 of 10 is exactly 70 %


def test_count_window_forgets_the_oldest_call() -> None:
    state = CountWindow(3, failure_rate=1.0).new_state()
    state.record(0, SUCCESS)
    state.record(0, FAILURE)
    assert not state.record(0, FAILURE)
    assert state.record(0, FAILURE)  # the success fell out: 3 of 3
    assert state.figures(0) == (3, 3, 0)


def test_slow_calls_have_their_own_threshold() -> None:
    state = CountWindow(4, failure_rate=1.0, slow_call_rate=0.5).new_state()
    state.record(0, SUCCESS)
    state.record(0, SUCCESS)
    assert not state.record(0, SLOW)
    assert state.record(0, SLOW | FAILURE)
    assert state.figures(0) == (4, 1, 2)


def test_time_window_evicts_whole_seconds() -> None:
    state = TimeWindow(2, minimum_calls=1).new_state()
    state.record(10.2, SUCCESS)
    state.record(11.9, FAILURE)
    assert state.figures(11.9) == (2, 1, 0)
    assert state.figures(12.0) == (1, 1, 0)
    assert state.figures(13.5) == (0, 0, 0)


def test_time_window_opens_on_a_success_after_old_successes_fall_out() -> None:
    state = TimeWindow(2, minimum_calls=1, failure_rate=0.5).new_state()
    for _ in range(5):
        state.record(100.1, SUCCESS)
    assert not state.record(101.1, FAILURE)
    assert not state.record(101.2, FAILURE)  # 2 of 7
    assert state.record(102.1, SUCCESS)  # second 100 evicted: 2 of 3


def test_time_window_rejudges_after_a_snapshot_evicted_buckets() -> None:
    state = TimeWindow(2, minimum_calls=1, failure_rate=0.5).new_state()
    for _ in range(5):
        state.record(100.1, SUCCESS)
    state.record(101.1, FAILURE)
    state.record(101.2, FAILURE)
    state.figures(102.0)  # the snapshot moves the head and evicts second 100
    assert state.record(102.1, SUCCESS)


def test_time_window_survives_a_long_silence() -> None:
    state = TimeWindow(3, minimum_calls=1).new_state()
    state.record(5.0, FAILURE)
    assert state.figures(1_000_000.0) == (0, 0, 0)
    assert state.record(1_000_000.5, FAILURE)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: CountWindow(0), "CountWindow.calls"),
        (lambda: CountWindow(5, minimum_calls=6), "CountWindow.minimum_calls"),
        (lambda: CountWindow(5, failure_rate=0), "CountWindow.failure_rate"),
        (lambda: TimeWindow(0), "TimeWindow.seconds"),
        (lambda: TimeWindow(10, slow_call_rate=1.5), "TimeWindow.slow_call_rate"),
        (lambda: ConsecutiveFailures(True), "ConsecutiveFailures.threshold"),
    ],
)
def test_bad_window_settings_fail_at_construction(factory: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.integers(1, 5),
    events=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.sampled_from([SUCCESS, FAILURE, SLOW, 3])),
        max_size=60,
    ),
)
def test_time_window_figures_match_a_recount(seconds: int, events: list[tuple[float, int]]) -> None:
    state = TimeWindow(seconds, minimum_calls=1).new_state()
    now = 0.0
    seen: list[tuple[float, int]] = []
    for step, outcome in events:
        now += step
        state.record(now, outcome)
        seen.append((now, outcome))
        inside = [o for t, o in seen if math.floor(t) > math.floor(now) - seconds]
        expected = (len(inside), sum(o & FAILURE for o in inside), sum(o >> 1 for o in inside))
        assert state.figures(now) == expected
