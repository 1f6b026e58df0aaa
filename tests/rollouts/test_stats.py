"""The guard's sequential tests: exact martingale properties and seeded simulations."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.rollouts._monitor import ArmWindow, GuardMonitor
from safeship.rollouts._simulate import (
    aa_false_rollbacks,
    errors_detection,
    latency_detection,
    lognormal_service,
)
from safeship.rollouts._stats import (
    ERROR_PRIOR,
    GuardSettings,
    LatencyHistogram,
    NonInferiorityTest,
    RatioPrior,
    RegressionTest,
    bucket_of,
    bucket_upper,
)

shares = st.floats(min_value=0.01, max_value=0.99)
counts = st.integers(min_value=0, max_value=40)


def _after(test_state: tuple[int, int], share: float, candidate: bool) -> float:
    k, m = test_state
    test = RegressionTest(ERROR_PRIOR)
    test.update(candidate=k + candidate, control=m + (not candidate), share=share)
    return test.e_value


@given(k=counts, m=counts, share=shares)
def test_regression_e_value_is_a_martingale_when_the_candidate_is_no_worse(
    k: int, m: int, share: float
) -> None:
    now = RegressionTest(ERROR_PRIOR)
    now.update(candidate=k, control=m, share=share)
    expected = share * _after((k, m), share, True) + (1 - share) * _after((k, m), share, False)
    assert math.isclose(expected, now.e_value, rel_tol=1e-9)


@given(k=counts, m=counts, share=shares, worse=st.floats(min_value=0.0, max_value=3.0))
def test_non_inferiority_e_value_is_a_supermartingale_when_worse_than_the_margin(
    k: int, m: int, share: float, worse: float
) -> None:
    margin = 0.2
    ratio = (1 + margin) * (1 + worse)
    p_candidate = share * ratio / (share * ratio + 1 - share)

    def e_after(dk: int, dm: int) -> float:
        t = NonInferiorityTest(margin=margin)
        t.update(candidate=k + dk, control=m + dm, share=share)
        return math.exp(t.log_e)

    expected = p_candidate * e_after(1, 0) + (1 - p_candidate) * e_after(0, 1)
    assert expected <= e_after(0, 0) * (1 + 1e-9)


def test_share_changes_between_updates_keep_the_martingale() -> None:
    test = RegressionTest(ERROR_PRIOR)
    test.update(candidate=3, control=40, share=0.05)
    before = test.e_value
    up, down = RegressionTest(ERROR_PRIOR), RegressionTest(ERROR_PRIOR)
    for t in (up, down):
        t.update(candidate=3, control=40, share=0.05)
    up.update(candidate=1, control=0, share=0.25)
    down.update(candidate=0, control=1, share=0.25)
    assert math.isclose(0.25 * up.e_value + 0.75 * down.e_value, before, rel_tol=1e-12)


def test_bad_settings_fail_at_construction_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        GuardSettings(alpha=0.7)
    with pytest.raises(ValueError, match="latency_quantile"):
        GuardSettings(latency_quantile=0.2)
    with pytest.raises(ValueError, match="ratio must be above 1"):
        RatioPrior(ratios=(0.9,), weights=(1.0,))
    with pytest.raises(ValueError, match="share"):
        RegressionTest().update(candidate=1, control=0, share=1.0)


def test_histogram_quantiles_are_within_one_bucket() -> None:
    hist = LatencyHistogram()
    for i in range(1, 1001):
        hist.add(i / 1000)
    p95 = hist.quantile(0.95)
    assert p95 is not None
    assert 0.95 <= p95 <= 0.95 * 1.1
    assert bucket_upper(bucket_of(0.3)) >= 0.3


# -- simulations (fixed seeds) -------------------------------------------------------------


def _upper_95(breaches: int, n: int) -> float:
    """Wilson score upper bound of a proportion."""
    z = 1.96
    p = breaches / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def test_aa_rollouts_rarely_roll_back() -> None:
    rollouts = 2_000
    breaches = aa_false_rollbacks(random.Random(6), rollouts=rollouts, requests=20_000)
    assert breaches / rollouts <= 0.01
    assert _upper_95(breaches, rollouts) <= 0.015


@pytest.mark.slow
def test_aa_rollouts_through_a_stepped_plan_rarely_roll_back() -> None:
    rng = random.Random(61)
    service = lognormal_service()
    breaches = 0
    rollouts = 300
    for _ in range(rollouts):
        monitor = GuardMonitor()
        for share, n in ((0.01, 2_000), (0.05, 2_000), (0.25, 2_000), (0.5, 4_000)):
            for _ in range(n):
                error, latency = service(rng)
                monitor.observe_one(
                    candidate=rng.random() < share, error=error, latency=latency, share=share
                )
            if monitor.verdict().breach:
                breaches += 1
                break
    assert breaches / rollouts <= 0.02


def test_errors_doubling_at_half_traffic_is_caught_within_6000_requests() -> None:
    found = errors_detection(
        random.Random(12), runs=1_000, share=0.5, control_rate=0.01, candidate_rate=0.02
    )
    assert found.median <= 6_000
    assert found.p90 <= 12_000


def test_errors_doubling_in_a_5_percent_canary_is_caught_within_28000_requests() -> None:
    found = errors_detection(
        random.Random(5), runs=600, share=0.05, control_rate=0.01, candidate_rate=0.02
    )
    assert found.median <= 28_000


def test_a_small_regression_is_eventually_caught() -> None:
    found = errors_detection(
        random.Random(125),
        runs=200,
        share=0.5,
        control_rate=0.01,
        candidate_rate=0.0125,
        max_events=8_000,
    )
    assert found.undetected <= 4  # power >= 98% within 8,000 errors


def test_a_catastrophic_candidate_is_caught_within_60_requests() -> None:
    found = latency_detection(
        random.Random(50),
        runs=400,
        control=lognormal_service(error_rate=0.01),
        candidate=lognormal_service(error_rate=0.5),
    )
    assert found.median * 2 <= 60


def test_a_doubled_p95_is_caught_within_40_requests_per_arm() -> None:
    found = latency_detection(
        random.Random(95),
        runs=300,
        control=lognormal_service(sigma=0.3),
        candidate=lognormal_service(sigma=0.3, scale=2.0),
    )
    assert found.median <= 40


def test_monitor_combines_windows_from_several_processes() -> None:
    monitor = GuardMonitor()
    hist = {bucket_of(0.05): 50}
    for _ in range(4):
        monitor.observe(
            share=0.5,
            control=ArmWindow(requests=50, errors=0, histogram=hist),
            candidate=ArmWindow(requests=50, errors=25, histogram=hist),
        )
    verdict = monitor.verdict()
    assert verdict.breach
    assert verdict.breached_metric == "errors"
    assert monitor.threshold_bucket == bucket_of(0.05)
