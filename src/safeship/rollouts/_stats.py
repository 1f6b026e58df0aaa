"""Always-valid sequential tests that compare a candidate arm with its concurrent control.

Pure functions and small state objects, no I/O, no clocks: the guard feeds them counts and
reads the evidence back.  The maths is explained in ``docs/rollouts.md``; in short:

* every *event* (an error, or a latency above the control arm's threshold) comes from the
  candidate arm with probability ``share`` (the fraction of traffic the candidate gets)
  when the candidate is no worse; with a rate ratio ``r`` that probability is
  ``share * r / (share * r + 1 - share)``;
* the likelihood ratio of "ratio r" against "ratio 1" over the events seen so far, mixed
  over a prior on r, is a test martingale when the candidate is no worse, so by Ville's
  inequality it exceeds ``1 / alpha`` with probability at most ``alpha`` *ever*, however
  often it is looked at.  The share may change between events (plan steps): the test stays
  valid because each event's share is known before the event happens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PRIOR",
    "ERROR_PRIOR",
    "LATENCY_PRIOR",
    "GuardSettings",
    "LatencyHistogram",
    "MetricEvidence",
    "NonInferiorityTest",
    "RatioPrior",
    "RegressionTest",
    "Verdict",
    "boundary_table",
]


@dataclass(frozen=True, slots=True)
class RatioPrior:
    """A discrete prior over rate ratios ``r > 1`` (the effect sizes a regression may have)."""

    ratios: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.ratios or len(self.ratios) != len(self.weights):
            raise ValueError("RatioPrior: ratios and weights must be non-empty and equally long")
        if any(r <= 1.0 for r in self.ratios):
            raise ValueError("RatioPrior: every ratio must be above 1 (a regression)")
        if any(w <= 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0):
            raise ValueError("RatioPrior: weights must be positive and sum to 1")

    @classmethod
    def log_spaced(cls, low: float, high: float, points: int, *, tilt: float = 0.0) -> RatioPrior:
        """``points`` ratios evenly spaced in log from ``low`` to ``high``; weights
        proportional to ``r ** -tilt`` (``tilt > 0`` favours smaller effects)."""
        if not 1.0 < low < high or points < 2:
            raise ValueError("RatioPrior.log_spaced: need 1 < low < high and points >= 2")
        step = (math.log(high) - math.log(low)) / (points - 1)
        ratios = tuple(math.exp(math.log(low) + i * step) for i in range(points))
        raw = [r**-tilt for r in ratios]
        total = sum(raw)
        return cls(ratios=ratios, weights=tuple(w / total for w in raw))

    @classmethod
    def centred(
        cls, centre: float, *, spread: float, floor: float = 0.01, points: int = 32
    ) -> RatioPrior:
        """Ratios from 1.1 to 200 (log-spaced); weights a normal bump on ``log r`` around
        ``centre`` (standard deviation ``spread``) plus ``floor`` everywhere, so every
        effect size keeps some weight (power tends to 1 for any regression in the range)."""
        if centre <= 1.0 or spread <= 0 or floor <= 0:
            raise ValueError("RatioPrior.centred: need centre > 1, spread > 0, floor > 0")
        grid = cls.log_spaced(1.1, 200.0, points)
        raw = [
            math.exp(-((math.log(r) - math.log(centre)) ** 2) / (2 * spread**2)) + floor
            for r in grid.ratios
        ]
        total = sum(raw)
        return cls(ratios=grid.ratios, weights=tuple(w / total for w in raw))


#: Errors: most weight around a doubling of the error rate, some on every ratio 1.1-200.
ERROR_PRIOR = RatioPrior.centred(2.0, spread=0.35)
#: Latency exceedances: a p95 that doubles multiplies exceedances of the control's p95
#: by about 5-10, so the weight sits there.
LATENCY_PRIOR = RatioPrior.centred(6.0, spread=0.6)
DEFAULT_PRIOR = ERROR_PRIOR


def _logsumexp(values: Iterable[float]) -> float:
    items = list(values)
    top = max(items)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in items))


class RegressionTest:
    """Mixture sequential test that the candidate's event rate is *higher* than control's.

    ``update`` takes the events seen at one traffic share; ``log_e`` is the log of the
    e-value (the mixture likelihood ratio).  Reject "no regression" once
    ``e_value >= 1 / alpha``.
    """

    __slots__ = ("_log_lr", "_log_ratios", "_log_weights", "candidate_events", "control_events")

    def __init__(self, prior: RatioPrior = DEFAULT_PRIOR) -> None:
        self._log_ratios = [math.log(r) for r in prior.ratios]
        self._log_weights = [math.log(w) for w in prior.weights]
        self._log_lr = [0.0] * len(prior.ratios)
        self.candidate_events = 0
        self.control_events = 0

    def update(self, *, candidate: int, control: int, share: float) -> None:
        """Add ``candidate`` and ``control`` events observed while the candidate had
        ``share`` (0 < share < 1) of the traffic."""
        if candidate < 0 or control < 0:
            raise ValueError("event counts cannot be negative")
        if not 0.0 < share < 1.0:
            raise ValueError(f"share must be strictly between 0 and 1, got {share}")
        total = candidate + control
        if total == 0:
            return
        self.candidate_events += candidate
        self.control_events += control
        for j, log_r in enumerate(self._log_ratios):
            mixed = math.log1p(share * (math.exp(log_r) - 1.0))
            self._log_lr[j] += candidate * log_r - total * mixed

    @property
    def log_e(self) -> float:
        return _logsumexp(w + lr for w, lr in zip(self._log_weights, self._log_lr, strict=True))

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))


def boundary_table(
    prior: RatioPrior, *, share: float, events: int, log_threshold: float
) -> list[int]:
    """For a fixed share, ``table[n]`` is the least number of candidate events among the
    first ``n`` events that makes the mixture's log e-value reach ``log_threshold``
    (``n + 1`` when none does).  The e-value only grows with candidate events, so a path
    crosses exactly when its candidate count reaches the table."""
    log_r = [math.log(r) for r in prior.ratios]
    log_w = [math.log(w) for w in prior.weights]
    mixed = [math.log1p(share * (r - 1.0)) for r in prior.ratios]
    table: list[int] = []
    k = 0
    for n in range(events + 1):
        k = max(k - 1, 0)  # the boundary moves by at most one per event
        while (
            k <= n
            and _logsumexp(w + k * lr - n * m for w, lr, m in zip(log_w, log_r, mixed, strict=True))
            < log_threshold
        ):
            k += 1
        table.append(k)
    return table


class NonInferiorityTest:
    """Sequential test that the candidate's event rate is at most ``1 + margin`` times
    control's: the evidence a plan needs to advance a step ("no worse than allowed")."""

    __slots__ = ("_log_lr", "_log_ratios", "_log_weights", "_null")

    def __init__(self, *, margin: float, points: int = 12) -> None:
        if not 0.0 < margin <= 10.0:
            raise ValueError(f"margin must be in (0, 10], got {margin}")
        self._null = 1.0 + margin
        # Alternatives below the null ratio, from just under it down to a quarter of it.
        low, high = math.log(self._null / 4.0), math.log(self._null / 1.05)
        step = (high - low) / (points - 1)
        self._log_ratios = [low + i * step for i in range(points)]
        self._log_weights = [-math.log(points)] * points
        self._log_lr = [0.0] * points

    def update(self, *, candidate: int, control: int, share: float) -> None:
        if not 0.0 < share < 1.0:
            raise ValueError(f"share must be strictly between 0 and 1, got {share}")
        total = candidate + control
        if total == 0:
            return
        null_mixed = math.log1p(share * (self._null - 1.0))
        log_null = math.log(self._null)
        for j, log_r in enumerate(self._log_ratios):
            mixed = math.log1p(share * (math.exp(log_r) - 1.0))
            self._log_lr[j] += candidate * (log_r - log_null) - total * (mixed - null_mixed)

    @property
    def log_e(self) -> float:
        return _logsumexp(w + lr for w, lr in zip(self._log_weights, self._log_lr, strict=True))


# -- latency: a log-bucketed histogram gives quantiles and the exceedance threshold ----------

_BUCKETS_PER_DOUBLING = 8
_SMALLEST = 1e-6  # seconds; everything below falls in bucket 0


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a latency: about 9% wide, from 1 µs up."""
    if seconds <= _SMALLEST:
        return 0
    return 1 + int(math.log2(seconds / _SMALLEST) * _BUCKETS_PER_DOUBLING)


def bucket_upper(bucket: int) -> float:
    """The upper edge (seconds) of ``bucket``."""
    return float(_SMALLEST * 2.0 ** (bucket / _BUCKETS_PER_DOUBLING))


@dataclass(slots=True)
class LatencyHistogram:
    """Counts per latency bucket; mergeable across processes, cheap to update."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0

    def add(self, seconds: float) -> None:
        b = bucket_of(seconds)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.total += 1

    def merge(self, other: Mapping[int, int] | LatencyHistogram) -> None:
        counts = other.counts if isinstance(other, LatencyHistogram) else other
        for b, n in counts.items():
            self.counts[int(b)] = self.counts.get(int(b), 0) + int(n)
            self.total += int(n)

    def quantile_bucket(self, q: float) -> int | None:
        """The bucket holding quantile ``q``, or None when empty."""
        if self.total == 0:
            return None
        rank = math.ceil(q * self.total)
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return b
        return max(self.counts)

    def quantile(self, q: float) -> float | None:
        """Quantile ``q`` in seconds (the bucket's upper edge), or None when empty."""
        b = self.quantile_bucket(q)
        return None if b is None else bucket_upper(b)

    def above(self, bucket: int) -> int:
        """How many latencies fell in buckets above ``bucket``."""
        return sum(n for b, n in self.counts.items() if b > bucket)


# -- the guard's decision rule over all metrics ----------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """The decision rule: the false-rollback bound and how it is shared between metrics."""

    alpha: float = 0.01
    error_share_of_alpha: float = 0.75
    latency_quantile: float = 0.95
    min_control_for_threshold: int = 10
    promotion_margin: float = 0.2
    promotion_beta: float = 0.05
    error_prior: RatioPrior = ERROR_PRIOR
    latency_prior: RatioPrior = LATENCY_PRIOR

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 0.0 < self.error_share_of_alpha < 1.0:
            raise ValueError("error_share_of_alpha must be strictly between 0 and 1")
        if not 0.5 <= self.latency_quantile < 1.0:
            raise ValueError("latency_quantile must be in [0.5, 1), e.g. 0.95 for p95")
        if self.promotion_margin <= 0:
            raise ValueError("promotion_margin must be positive, e.g. 0.2 for 'at most 20% worse'")
        if self.min_control_for_threshold < 5:
            raise ValueError("min_control_for_threshold must be at least 5")
        if not 0.0 < self.promotion_beta < 0.5:
            raise ValueError("promotion_beta must be in (0, 0.5)")

    @property
    def error_log_threshold(self) -> float:
        """Errors alone breach when their log e-value reaches this."""
        return -math.log(self.alpha * self.error_share_of_alpha)

    @property
    def latency_log_threshold(self) -> float:
        return -math.log(self.alpha * (1.0 - self.error_share_of_alpha))


@dataclass(frozen=True, slots=True)
class MetricEvidence:
    """What one metric's tests say right now."""

    metric: str
    candidate_events: int
    control_events: int
    e_value: float
    threshold: float
    promotion_e_value: float

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "candidate_events": self.candidate_events,
            "control_events": self.control_events,
            "e_value": round(self.e_value, 6),
            "threshold": round(self.threshold, 3),
            "promotion_e_value": round(self.promotion_e_value, 6),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's reading: breach (roll back), healthy enough to advance, or keep watching.

    The combined statistic is the alpha-weighted sum of the metrics' e-values, itself a
    test supermartingale, so ``breach`` has probability at most ``alpha`` over the whole
    rollout when the candidate is no worse on any metric.
    """

    breach: bool
    promotable: bool
    combined: float
    evidence: tuple[MetricEvidence, ...]

    @property
    def breached_metric(self) -> str | None:
        if not self.breach:
            return None
        worst = max(self.evidence, key=lambda e: e.e_value / e.threshold)
        return worst.metric

    def to_dict(self) -> dict[str, object]:
        return {
            "breach": self.breach,
            "promotable": self.promotable,
            "combined": round(self.combined, 6),
            "breached_metric": self.breached_metric,
            "evidence": [e.to_dict() for e in self.evidence],
        }
