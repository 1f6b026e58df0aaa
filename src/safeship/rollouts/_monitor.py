"""The guard's running state for one rollout: counts in, a verdict out.  Pure, no I/O.

Processes record per arm how many requests, errors and *exceedances* (latencies above the
threshold in force when they were observed) they saw, with a latency histogram; the
monitor folds such windows in, in order, and keeps the sequential tests of ``stats``.
The exceedance threshold is the control arm's ``latency_quantile`` over everything folded
in so far: it only depends on the past, which is what keeps the latency test valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from safeship.rollouts._stats import (
    GuardSettings,
    LatencyHistogram,
    MetricEvidence,
    NonInferiorityTest,
    RegressionTest,
    Verdict,
    bucket_of,
)

__all__ = ["ArmWindow", "GuardMonitor"]


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """What one arm saw during one window (from one process or summed over several)."""

    requests: int = 0
    errors: int = 0
    exceedances: int = 0
    histogram: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.requests, self.errors, self.exceedances) < 0:
            raise ValueError("ArmWindow counts cannot be negative")
        if self.errors > self.requests or self.exceedances > self.requests:
            raise ValueError("ArmWindow: errors and exceedances cannot exceed requests")

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "exceedances": self.exceedances,
            "histogram": {str(k): v for k, v in self.histogram.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ArmWindow:
        hist = data.get("histogram") or {}
        assert isinstance(hist, Mapping)
        return cls(
            requests=_int(data.get("requests")),
            errors=_int(data.get("errors")),
            exceedances=_int(data.get("exceedances")),
            histogram={int(k): _int(v) for k, v in hist.items()},
        )


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


class GuardMonitor:
    """Accumulates one rollout's windows and answers: breach, promotable, or keep watching."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.errors = RegressionTest(self.settings.error_prior)
        self.latency = RegressionTest(self.settings.latency_prior)
        self.errors_ok = NonInferiorityTest(margin=self.settings.promotion_margin)
        self.latency_ok = NonInferiorityTest(margin=self.settings.promotion_margin)
        self.control = LatencyHistogram()
        self.candidate = LatencyHistogram()
        self.requests = {"control": 0, "candidate": 0}
        self.error_counts = {"control": 0, "candidate": 0}
        self._threshold: int | None = None

    @property
    def threshold_bucket(self) -> int | None:
        """Latencies in buckets above this count as exceedances (None: not enough control
        data yet, so nothing counts)."""
        return self._threshold

    def observe(self, *, share: float, control: ArmWindow, candidate: ArmWindow) -> None:
        """Fold in one window seen while the candidate had ``share`` of the traffic."""
        if 0.0 < share < 1.0:
            self.errors.update(candidate=candidate.errors, control=control.errors, share=share)
            self.errors_ok.update(candidate=candidate.errors, control=control.errors, share=share)
            self.latency.update(
                candidate=candidate.exceedances, control=control.exceedances, share=share
            )
            self.latency_ok.update(
                candidate=candidate.exceedances, control=control.exceedances, share=share
            )
        for arm, window in (("control", control), ("candidate", candidate)):
            self.requests[arm] += window.requests
            self.error_counts[arm] += window.errors
        self.control.merge(control.histogram)
        self.candidate.merge(candidate.histogram)
        if self.control.total >= self.settings.min_control_for_threshold:
            self._threshold = self.control.quantile_bucket(self.settings.latency_quantile)

    def observe_one(self, *, candidate: bool, error: bool, latency: float, share: float) -> None:
        """One request (simulations and tests): counts its exceedance against the threshold
        in force, then folds it in."""
        bucket = bucket_of(latency)
        exceeded = self._threshold is not None and bucket > self._threshold
        window = ArmWindow(
            requests=1, errors=int(error), exceedances=int(exceeded), histogram={bucket: 1}
        )
        empty = ArmWindow()
        if candidate:
            self.observe(share=share, control=empty, candidate=window)
        else:
            self.observe(share=share, control=window, candidate=empty)

    def verdict(self) -> Verdict:
        s = self.settings
        weight_errors = s.error_share_of_alpha
        combined = weight_errors * self.errors.e_value + (1 - weight_errors) * self.latency.e_value
        evidence = (
            _evidence("errors", self.errors, self.errors_ok, s.error_log_threshold),
            _evidence("latency", self.latency, self.latency_ok, s.latency_log_threshold),
        )
        cleared = -math.log(s.promotion_beta)
        promotable = all(
            self._cleared(test, ok, cleared)
            for test, ok in ((self.errors, self.errors_ok), (self.latency, self.latency_ok))
        )
        breach = combined >= 1.0 / s.alpha
        return Verdict(
            breach=breach, promotable=promotable and not breach, combined=combined,
            evidence=evidence,
        )  # fmt: skip

    @staticmethod
    def _cleared(test: RegressionTest, ok: NonInferiorityTest, log_needed: float) -> bool:
        no_events = test.candidate_events == 0 and test.control_events == 0
        return no_events or ok.log_e >= log_needed

    def summary(self) -> dict[str, object]:
        """Per arm: requests, error rate and p50/p95/p99 latency (seconds)."""
        arms: dict[str, object] = {}
        for arm, hist in (("control", self.control), ("candidate", self.candidate)):
            n = self.requests[arm]
            arms[arm] = {
                "requests": n,
                "errors": self.error_counts[arm],
                "error_rate": self.error_counts[arm] / n if n else None,
                "p50": hist.quantile(0.5),
                "p95": hist.quantile(0.95),
                "p99": hist.quantile(0.99),
            }
        return arms


def _evidence(
    name: str, test: RegressionTest, ok: NonInferiorityTest, log_threshold: float
) -> MetricEvidence:
    return MetricEvidence(
        metric=name,
        candidate_events=test.candidate_events,
        control_events=test.control_events,
        e_value=test.e_value,
        threshold=math.exp(log_threshold),
        promotion_e_value=math.exp(min(ok.log_e, 700.0)),
    )
