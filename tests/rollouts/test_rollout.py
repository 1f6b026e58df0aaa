"""Rollout routing and recording, and shadow experiments that never hurt the caller."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from safeship.rollouts import MismatchError, Mode, Rollout, ShadowOptions


class Always:
    def __init__(self, on: bool) -> None:
        self.on = on

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        return self.on


def legacy(x: int) -> dict[str, int]:
    return {"value": x, "version": 1}


def candidate(x: int) -> dict[str, int]:
    return {"value": x, "version": 2}


def boom(x: int) -> dict[str, int]:
    raise RuntimeError("candidate broke")


def test_off_mode_calls_legacy_only_and_records_nothing() -> None:
    r = Rollout("f", legacy=legacy, candidate=boom)
    assert r(1) == {"value": 1, "version": 1}
    assert r.recorder.drain() is None


def test_canary_routes_by_flag_and_records_each_arm() -> None:
    flags = Always(True)
    r = Rollout("f", legacy=legacy, candidate=boom, flags=flags, mode="canary")
    with pytest.raises(RuntimeError):
        r(1)
    flags.on = False
    assert r(2)["version"] == 1
    drained = r.recorder.drain()
    assert drained is not None
    control, cand = drained
    assert (control.requests, control.errors) == (1, 0)
    assert (cand.requests, cand.errors) == (1, 1)


def test_error_predicate_counts_bad_results_as_errors() -> None:
    r = Rollout(
        "f", legacy=legacy, candidate=candidate, flags=Always(True), mode="canary",
        is_error=lambda exc, result: exc is not None or result["version"] == 2,
    )  # fmt: skip
    r(1)
    drained = r.recorder.drain()
    assert drained is not None
    assert drained[1].errors == 1


def test_canary_without_flags_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="flags="):
        Rollout("f", legacy=legacy, candidate=candidate, mode=Mode.CANARY)


def test_shadow_candidate_exceptions_and_hook_errors_never_reach_the_caller() -> None:
    def bad_compare(a: Any, b: Any) -> bool:
        raise ValueError("comparator broke")

    def bad_publish(observation: Any) -> None:
        raise ValueError("publisher broke")

    r = Rollout(
        "f", legacy=legacy, candidate=boom, mode="shadow",
        shadow=ShadowOptions(off_path=False, compare=bad_compare, publish=bad_publish),
    )  # fmt: skip
    assert r(1)["version"] == 1
    r2 = Rollout(
        "g", legacy=legacy, candidate=candidate, mode="shadow",
        shadow=ShadowOptions(off_path=False, compare=bad_compare),
    )  # fmt: skip
    assert r2(1)["version"] == 1
    assert r.shadow.stats.candidate_errors == 1
    assert r2.shadow.stats.hook_errors == 1


def test_shadow_records_mismatches_with_a_compact_diff_and_applies_ignore_rules() -> None:
    seen: list[Any] = []
    r = Rollout(
        "f", legacy=legacy, candidate=candidate, mode="shadow", rng=random.Random(1),
        shadow=ShadowOptions(off_path=False, publish=seen.append),
    )  # fmt: skip
    r(1, context={"userId": "7"})
    stats = r.shadow.stats.snapshot()
    assert stats["mismatches"] == 1
    assert stats["mismatch_rate"] == 1.0
    assert stats["samples"][0]["diff"] == "'version': 1 → 2"
    assert "userId" in stats["samples"][0]["context"]
    assert len(seen) == 1
    ignoring = Rollout(
        "f", legacy=legacy, candidate=candidate, mode="shadow",
        shadow=ShadowOptions(off_path=False, ignore=[lambda a, b: a["value"] == b["value"]]),
    )  # fmt: skip
    ignoring(1)
    assert ignoring.shadow.stats.ignored == 1
    assert ignoring.shadow.stats.mismatches == 0
    cleaned = Rollout(
        "f", legacy=legacy, candidate=candidate, mode="shadow",
        shadow=ShadowOptions(off_path=False, clean=lambda v: v["value"]),
    )  # fmt: skip
    cleaned(1)
    assert cleaned.shadow.stats.matches == 1


def test_raise_on_mismatch_raises_for_tests() -> None:
    r = Rollout(
        "f", legacy=legacy, candidate=candidate, mode="shadow",
        shadow=ShadowOptions(off_path=False, raise_on_mismatch=True),
    )  # fmt: skip
    with pytest.raises(MismatchError, match="version"):
        r(1)


def test_shadow_sampling_and_run_if_limit_candidate_runs() -> None:
    calls: list[int] = []

    def counted(x: int) -> dict[str, int]:
        calls.append(x)
        return legacy(x)

    r = Rollout(
        "f", legacy=legacy, candidate=counted, mode="shadow", rng=random.Random(3),
        shadow=ShadowOptions(off_path=False, sample=0.1, run_if=lambda ctx: ctx != "skip"),
    )  # fmt: skip
    for i in range(1000):
        r(i, context="skip" if i % 2 else None)
    assert 20 <= len(calls) <= 80
    assert all(i % 2 == 0 for i in calls)


def test_off_path_queue_is_bounded_and_counts_drops() -> None:
    release = __import__("threading").Event()

    def slow(x: int) -> dict[str, int]:
        release.wait(5)
        return legacy(x)

    r = Rollout("f", legacy=legacy, candidate=slow, mode="shadow",
                shadow=ShadowOptions(queue_size=5))  # fmt: skip
    started = time.perf_counter()
    for i in range(50):
        assert r(i)["value"] == i
    assert time.perf_counter() - started < 1.0  # the caller never waits for the candidate
    release.set()
    r.join_shadow()
    stats = r.shadow.stats
    assert stats.dropped >= 50 - 6
    assert stats.runs + stats.dropped == 50
    r.close()


def test_legacy_exception_still_reaches_the_caller_and_is_compared() -> None:
    def legacy_fails(x: int) -> int:
        raise KeyError(x)

    r = Rollout("f", legacy=legacy_fails, candidate=legacy_fails, mode="shadow",
                shadow=ShadowOptions(off_path=False))  # fmt: skip
    with pytest.raises(KeyError):
        r(1)
    assert r.shadow.stats.runs == 1


async def test_async_shadow_runs_off_path_and_timeouts_never_surface() -> None:
    async def alegacy(x: int) -> int:
        return x

    async def hangs(x: int) -> int:
        await asyncio.sleep(10)
        return x

    r = Rollout("f", legacy=alegacy, candidate=hangs, mode="shadow",
                shadow=ShadowOptions(timeout=0.05))  # fmt: skip
    assert await r.acall(3) == 3
    await r.join_shadow_async()
    assert r.shadow.stats.timeouts == 1
    assert r.shadow.stats.candidate_errors == 1


async def test_async_canary_records_outcomes() -> None:
    async def alegacy(x: int) -> int:
        return x

    r = Rollout("f", legacy=alegacy, candidate=boom, flags=Always(False), mode="canary")
    assert await r.acall(4) == 4
    drained = r.recorder.drain()
    assert drained is not None
    assert drained[0].requests == 1
