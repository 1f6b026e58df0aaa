"""Evaluation counts: per flag, by result and variant, lock-free, across snapshots."""

from __future__ import annotations

import threading
from typing import Any

from safeship.flags import EvaluationCounter, FlagCounts, FlagSet

STATE: dict[str, Any] = {
    "features": [
        {"name": "on", "enabled": True, "strategies": []},
        {
            "name": "split",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "split"},
                }
            ],
            "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
        },
    ]
}


def test_counts_by_result_and_variant() -> None:
    counter = EvaluationCounter()
    flags = FlagSet.from_unleash(STATE, counter=counter)
    results = [flags.is_enabled("split", {"userId": str(i)}) for i in range(200)]
    variants = [flags.variant("split", {"userId": str(i)}).name for i in range(200)]
    flags.is_enabled("on")
    totals = counter.totals()
    assert totals["split"].yes == 2 * sum(results)
    assert totals["split"].no == 2 * (200 - sum(results))
    assert totals["split"].variants == {
        name: variants.count(name) for name in ("a", "b", "disabled")
    }
    assert totals["on"] == FlagCounts(yes=1, no=0, variants={"disabled": 0}, errors=0)


def test_drain_returns_what_happened_since_the_last_drain() -> None:
    counter = EvaluationCounter()
    flags = FlagSet.from_unleash(STATE, counter=counter)
    flags.is_enabled("on")
    flags.is_enabled("on")
    assert counter.drain()["on"].yes == 2
    assert counter.drain() == {}
    flags.is_enabled("on")
    assert counter.drain() == {"on": FlagCounts(yes=1)}


def test_counts_survive_a_snapshot_swap() -> None:
    counter = EvaluationCounter()
    FlagSet.from_unleash(STATE, counter=counter).is_enabled("on")
    FlagSet.from_unleash(STATE).with_counter(counter).is_enabled("on")
    assert counter.totals()["on"].yes == 2


def test_uncounted_snapshots_count_nothing() -> None:
    counter = EvaluationCounter()
    counted = FlagSet.from_unleash(STATE, counter=counter)
    counted.with_counter(None).is_enabled("on")
    assert counter.totals()["on"].total == 0
    assert counted.counter is counter


def test_unknown_flags_and_failures_are_counted() -> None:
    counter = EvaluationCounter()
    flags = FlagSet.from_unleash(STATE, counter=counter)
    flags.is_enabled("ghost")
    flags.variant("ghost")
    flags.is_enabled("split", "not a mapping")  # type: ignore[arg-type]
    assert counter.missing() == {"ghost": 2}
    assert counter.drain_missing() == {"ghost": 2}
    assert counter.drain_missing() == {}
    assert counter.totals()["split"].errors == 1


def test_no_count_is_lost_between_threads() -> None:
    counter = EvaluationCounter()
    flags = FlagSet.from_unleash(STATE, counter=counter)

    def work() -> None:
        for i in range(5000):
            flags.is_enabled("on", {"userId": str(i)})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.totals()["on"].yes == 20000
