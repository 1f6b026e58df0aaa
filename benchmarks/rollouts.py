"""Guarded rollouts: overhead on the caller's path, and the guard's detection figures.

    python benchmarks/rollouts.py [--quick]

Overhead cases (ns/call; ``baseline`` calls legacy directly, ``laboratory`` is the peer):
  off-overhead       rollout off: legacy only
  canary-overhead    flag evaluation (a 50% rollout on a FlagSet) + outcome recording
  shadow-overhead    shadow mode with the candidate off the request path (queued)
  shadow-overhead-p99  p99 of the caller's time per call in shadow mode, with a candidate
                     that takes 0.5 ms (the caller must not wait for it), vs baseline's p99
Simulation cases (seeded, see docs/rollouts.md):
  aa-false-rollback  share of A/A rollouts rolled back (ratio)
  detect-errors-1to2 median requests in total to catch 1% -> 2% errors at 50/50 (count)
  detect-errors-1to3 the same for 1% -> 3% (count)
  detect-p95-x2      median requests per arm to catch a doubled p95 (count)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from safeship.flags import FlagSet
from safeship.rollouts import Rollout, ShadowOptions
from safeship.rollouts._simulate import (
    aa_false_rollbacks,
    errors_detection,
    latency_detection,
    lognormal_service,
)


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": "rollouts", "case": case, "impl": impl, "value": round(value, 4), "unit": unit}
    print(json.dumps(line), flush=True)


def legacy(x: int) -> int:
    return x + 1


def candidate(x: int) -> int:
    return x + 1


def per_call(fn: Callable[[int], Any], n: int) -> float:
    started = time.perf_counter_ns()
    for i in range(n):
        fn(i)
    return (time.perf_counter_ns() - started) / n


def p99_per_call(fn: Callable[[int], Any], n: int) -> float:
    """The 99th percentile of single-call times (each call timed on its own)."""
    clock = time.perf_counter_ns
    times = []
    for i in range(n):
        started = clock()
        fn(i)
        times.append(clock() - started)
    times.sort()
    return float(times[int(0.99 * (len(times) - 1))])


def slow_candidate(x: int) -> int:
    time.sleep(0.0005)
    return x + 1


def shadow_tail(rounds: int, n: int) -> None:
    """Shadow mode's tail on the caller's path while the candidate is slow."""
    rollout = Rollout("f", legacy=legacy, candidate=slow_candidate, mode="shadow")
    results: dict[str, list[float]] = {"baseline": [], "safeship": []}
    for _ in range(rounds):
        results["baseline"].append(p99_per_call(legacy, n))
        results["safeship"].append(p99_per_call(rollout, n))
    rollout.close()
    for impl, values in results.items():
        emit("shadow-overhead-p99", impl, statistics.median(values), "ns/call")


def laboratory_call(enabled: bool) -> Callable[[int], Any]:
    import laboratory

    class Exp(laboratory.Experiment):  # type: ignore[misc]
        def enabled(self) -> bool:
            return enabled

        def publish(self, result: Any) -> None:
            pass

    def call(x: int) -> Any:
        exp = Exp(name="listing")
        exp.control(legacy, args=[x])
        exp.candidate(candidate, args=[x])
        return exp.conduct()

    return call


def overhead(rounds: int, n: int) -> None:
    flags = FlagSet.from_unleash(
        {"version": 1, "features": [{"name": "f", "enabled": True, "strategies": [
            {"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "random",
                                                       "groupId": "f"}}]}]}
    )  # fmt: skip
    impls: dict[str, dict[str, Callable[[int], Any]]] = {
        "off-overhead": {
            "baseline": legacy,
            "safeship": Rollout("f", legacy=legacy, candidate=candidate, mode="off"),
            "laboratory": laboratory_call(False),
        },
        "canary-overhead": {
            "baseline": legacy,
            "safeship": Rollout(
                "f", legacy=legacy, candidate=candidate, flags=flags, mode="canary"
            ),
        },
        "shadow-overhead": {
            "baseline": legacy,
            "safeship": Rollout(
                "f",
                legacy=legacy,
                candidate=candidate,
                mode="shadow",
                shadow=ShadowOptions(queue_size=1_000_000),
            ),
            "laboratory": laboratory_call(True),
        },
    }
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for case, fns in impls.items():
            for impl, fn in fns.items():
                results.setdefault((case, impl), []).append(per_call(fn, n))
                if isinstance(fn, Rollout):
                    fn.join_shadow()
    for (case, impl), values in results.items():
        emit(case, impl, statistics.median(values), "ns/call")
    shadow = impls["shadow-overhead"]["safeship"]
    assert isinstance(shadow, Rollout)
    shadow.close()


def simulations(quick: bool) -> None:
    aa = 500 if quick else 2_000
    breaches = aa_false_rollbacks(random.Random(6), rollouts=aa, requests=20_000)
    emit("aa-false-rollback", "safeship", breaches / aa, "ratio")
    runs = 300 if quick else 1_000
    for case, rate in (("detect-errors-1to2", 0.02), ("detect-errors-1to3", 0.03)):
        found = errors_detection(random.Random(12), runs=runs, share=0.5, control_rate=0.01,
                                 candidate_rate=rate)  # fmt: skip
        emit(case, "safeship", found.median, "count")
    found = latency_detection(
        random.Random(95), runs=100 if quick else 300,
        control=lognormal_service(sigma=0.3), candidate=lognormal_service(sigma=0.3, scale=2.0),
    )  # fmt: skip
    emit("detect-p95-x2", "safeship", found.median, "count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 60 s")
    args = parser.parse_args()
    overhead(rounds=5 if args.quick else 15, n=20_000 if args.quick else 100_000)
    shadow_tail(rounds=3 if args.quick else 9, n=20_000 if args.quick else 100_000)
    simulations(args.quick)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
