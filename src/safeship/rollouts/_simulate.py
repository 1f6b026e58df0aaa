"""Seeded simulations of the guard's decision rule (tests, benchmarks and docs use them).

Pure Python and deterministic for a given ``random.Random``.  Error-only scenarios walk
the sequence of *events* (only errors move the conditional test) with the number of
requests between events drawn from the right geometric law, which is exact and fast;
latency scenarios simulate every request through ``GuardMonitor``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from safeship.rollouts._monitor import GuardMonitor
from safeship.rollouts._stats import GuardSettings, RatioPrior, boundary_table

__all__ = [
    "LogEvidenceTable",
    "Quantiles",
    "aa_false_rollbacks",
    "errors_detection",
    "latency_detection",
    "quantiles",
]


@dataclass(frozen=True, slots=True)
class Quantiles:
    median: float
    p90: float
    undetected: int

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "p90": self.p90, "undetected": self.undetected}


def quantiles(values: list[int], *, undetected: int = 0) -> Quantiles:
    ordered = sorted(values)
    n = len(ordered)
    return Quantiles(
        median=float(ordered[(n - 1) // 2]), p90=float(ordered[int(0.9 * (n - 1))]),
        undetected=undetected,
    )  # fmt: skip


class LogEvidenceTable:
    """log e-value of a regression test after ``k`` candidate events among ``n`` at a
    fixed share, computed on demand and cached (A/A paths revisit the same cells)."""

    def __init__(self, prior: RatioPrior, share: float) -> None:
        self._log_w = [math.log(w) for w in prior.weights]
        self._log_r = [math.log(r) for r in prior.ratios]
        self._mixed = [math.log1p(share * (r - 1.0)) for r in prior.ratios]
        self._cache: dict[tuple[int, int], float] = {}

    def __call__(self, n: int, k: int) -> float:
        key = (n, k)
        value = self._cache.get(key)
        if value is None:
            terms = [
                w + k * lr - n * m
                for w, lr, m in zip(self._log_w, self._log_r, self._mixed, strict=True)
            ]
            top = max(terms)
            value = top + math.log(sum(math.exp(t - top) for t in terms))
            self._cache[key] = value
        return value


def aa_false_rollbacks(
    rng: random.Random,
    *,
    rollouts: int,
    requests: int,
    settings: GuardSettings | None = None,
    share: float = 0.5,
    error_rate: float = 0.01,
) -> int:
    """A/A rollouts (candidate identical to control), monitored after every event of
    ``requests`` requests each: errors at ``error_rate`` and exceedances of the control's
    quantile at ``1 - latency_quantile``.  Returns how many rolled back (combined rule)."""
    s = settings or GuardSettings()
    errors = LogEvidenceTable(s.error_prior, share)
    latency = LogEvidenceTable(s.latency_prior, share)
    exceed_rate = 1.0 - s.latency_quantile
    event_rate = error_rate + exceed_rate
    events = max(1, round(requests * event_rate))
    p_error = error_rate / event_rate
    w = s.error_share_of_alpha
    limit = 1.0 / s.alpha
    breached = 0
    for _ in range(rollouts):
        ne = ke = nl = kl = 0
        for _ in range(events):
            from_candidate = rng.random() < share
            if rng.random() < p_error:
                ne += 1
                ke += from_candidate
            else:
                nl += 1
                kl += from_candidate
            combined = w * math.exp(errors(ne, ke)) + (1 - w) * math.exp(latency(nl, kl))
            if combined >= limit:
                breached += 1
                break
    return breached


def errors_detection(
    rng: random.Random,
    *,
    runs: int,
    share: float,
    control_rate: float,
    candidate_rate: float,
    settings: GuardSettings | None = None,
    max_events: int = 20_000,
) -> Quantiles:
    """Requests in total (both arms) until the error test alone breaches (conservative:
    the combined rule breaches no later)."""
    s = settings or GuardSettings()
    table = boundary_table(
        s.error_prior, share=share, events=max_events, log_threshold=s.error_log_threshold
    )
    total_rate = share * candidate_rate + (1 - share) * control_rate
    from_candidate = share * candidate_rate / total_rate
    log_miss = math.log(1.0 - total_rate)
    found: list[int] = []
    missed = 0
    for _ in range(runs):
        k = requests = 0
        for n in range(1, max_events + 1):
            requests += int(math.log(1.0 - rng.random()) / log_miss) + 1
            k += rng.random() < from_candidate
            if k >= table[n]:
                found.append(requests)
                break
        else:
            missed += 1
            found.append(10**12)
    return quantiles(found, undetected=missed)


def latency_detection(
    rng: random.Random,
    *,
    runs: int,
    candidate: Callable[[random.Random], tuple[bool, float]],
    control: Callable[[random.Random], tuple[bool, float]],
    share: float = 0.5,
    settings: GuardSettings | None = None,
    max_pairs: int = 2_000,
) -> Quantiles:
    """Requests *per arm* until the guard breaches, every request through ``GuardMonitor``
    (arms alternate, i.e. a 50/50 split observed in pairs)."""
    found: list[int] = []
    missed = 0
    for _ in range(runs):
        monitor = GuardMonitor(settings)
        for pair in range(1, max_pairs + 1):
            for is_candidate, draw in ((False, control), (True, candidate)):
                error, seconds = draw(rng)
                monitor.observe_one(
                    candidate=is_candidate, error=error, latency=seconds, share=share
                )
            if monitor.verdict().breach:
                found.append(pair)
                break
        else:
            missed += 1
            found.append(10**9)
    return quantiles(found, undetected=missed)


def lognormal_service(
    *, median: float = 0.05, sigma: float = 0.3, scale: float = 1.0, error_rate: float = 0.01
) -> Callable[[random.Random], tuple[bool, float]]:
    """A simulated arm: errors at ``error_rate``, latency log-normal (``scale`` multiplies
    every latency, so ``scale=2`` doubles p50, p95 and p99 alike)."""

    def draw(rng: random.Random) -> tuple[bool, float]:
        return rng.random() < error_rate, median * scale * math.exp(rng.gauss(0.0, sigma))

    return draw
