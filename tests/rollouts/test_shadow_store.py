"""Shadow results stored fleet-wide (SQLite and PostgreSQL), and promotion shadow → canary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, list_audit, upgrade
from safeship.flags import FlagSet
from safeship.flags.store import FlagStore
from safeship.rollouts import GuardAgent, Mode, Plan, Rollout, RolloutGuard, ShadowOptions
from safeship.rollouts._schema import rollout_shadow_samples
from safeship.rollouts._shadow_store import KEEP_SAMPLES

INLINE = ShadowOptions(off_path=False, randomize_order=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shadow.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def guard(engine: sa.Engine) -> RolloutGuard:
    guard = RolloutGuard(engine, FlagStore(engine))
    guard.create("listing", actor="alice", mode="shadow", plan=Plan(steps=(10, 50, 100)))
    return guard


def _rollout(candidate: Any, *, options: ShadowOptions = INLINE) -> Rollout:
    return Rollout(
        "listing", legacy=lambda n: {"n": n, "ok": True}, candidate=candidate, mode="shadow",
        shadow=options,
    )  # fmt: skip


def _differs_on_odd(n: int) -> dict[str, Any]:
    return {"n": n, "ok": n % 2 == 0}


def test_agent_ships_shadow_counters_since_the_last_tick_and_new_mismatches(
    guard: RolloutGuard,
) -> None:
    rollout = _rollout(_differs_on_odd)
    agent = GuardAgent(guard, [rollout], process="p1")
    for n in range(10):
        rollout(n, context={"userId": f"u{n}"})
    agent.tick()
    shadow = guard.shadow("listing")
    assert (shadow.comparisons, shadow.counts["mismatches"], shadow.mismatch_rate) == (10, 5, 0.5)
    assert len(shadow.samples) == 5
    newest = shadow.samples[0]
    assert newest["kind"] == "mismatch" and newest["process"] == "p1"
    assert newest["diff"] == "'ok': True → False"
    assert newest["context"] == "{'userId': 'u9'}"
    agent.tick()  # nothing new: nothing added
    assert guard.shadow("listing").comparisons == 10
    rollout(2)
    agent.tick()
    assert guard.shadow("listing").counts["matches"] == 6
    assert len(guard.shadow("listing").samples) == 5


def test_two_processes_add_up_and_candidate_errors_are_kept_as_samples(
    guard: RolloutGuard,
) -> None:
    def broken(n: int) -> dict[str, Any]:
        raise RuntimeError("candidate down")

    first, second = _rollout(_differs_on_odd), _rollout(broken)
    agents = [GuardAgent(guard, [first], process="p1"), GuardAgent(guard, [second], process="p2")]
    for n in range(4):
        first(n)
        second(n)
    for agent in agents:
        agent.tick()
    shadow = guard.shadow("listing").to_dict()
    assert (shadow["runs"], shadow["comparisons"], shadow["candidate_errors"]) == (8, 4, 4)
    assert shadow["mismatch_rate"] == 0.5
    errors = [s for s in shadow["samples"] if s["kind"] == "error"]
    assert len(errors) == 4 and {s["process"] for s in errors} == {"p2"}
    assert "candidate down" in errors[0]["candidate_error"]


def test_samples_are_bounded_per_tick_and_per_rollout(guard: RolloutGuard) -> None:
    rollout = _rollout(lambda n: {"n": -n, "ok": True})
    agent = GuardAgent(guard, [rollout], process="p1")
    for tick in range(7):
        for n in range(1, 51):
            rollout(tick * 100 + n)
        agent.tick()
        with guard.engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(rollout_shadow_samples))
            assert stored.scalar_one() == min(20 * (tick + 1), KEEP_SAMPLES)
    shadow = guard.shadow("listing", samples=200)
    assert shadow.counts["mismatches"] == 350
    assert len(shadow.samples) == KEEP_SAMPLES
    assert shadow.samples[0]["diff"].startswith("'n': 650 → -650")  # the newest is kept


class _Nasty:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_huge_and_hostile_values_are_capped_and_never_break_the_agent(
    guard: RolloutGuard,
) -> None:
    hostile = ["x" * 1_000_000, "nul\x00byte", "lone \udc80 surrogate", _Nasty(), [_Nasty()] * 5]
    rollout = Rollout(
        "listing", legacy=lambda v: "legacy", candidate=lambda v: v, mode="shadow", shadow=INLINE
    )
    agent = GuardAgent(guard, [rollout], process="p" * 500)
    for value in hostile:
        rollout(value, context=value)
    agent.tick()
    shadow = guard.shadow("listing")
    assert shadow.counts["mismatches"] == len(hostile) and len(shadow.samples) == len(hostile)
    for sample in shadow.samples:
        for field in ("diff", "control", "candidate", "context", "process"):
            text = sample[field]
            assert isinstance(text, str) and len(text) <= 1000 and "\x00" not in text
            text.encode("utf-8")
    assert any("unrepresentable" in s["context"] or "instance" in s["context"]
               for s in shadow.samples)  # fmt: skip


def test_record_shadow_refuses_nothing_and_stores_garbage_safely(guard: RolloutGuard) -> None:
    guard.record_shadow(
        "listing", process="p1",
        counts={"matches": "3", "mismatches": -4, "runs": None, "dropped": "lots", "extra": 9},
        samples=[{"diff": 12345, "at": "not a date", "candidate_ms": float("nan")}] * 30,
    )  # fmt: skip
    shadow = guard.shadow("listing", samples=100)
    assert shadow.counts["matches"] == 3 and shadow.counts["mismatches"] == 0
    assert len(shadow.samples) == 20
    assert shadow.samples[0]["diff"] == "12345" and shadow.samples[0]["candidate_ms"] is None


def test_promote_moves_shadow_to_canary_at_the_first_step_audited(guard: RolloutGuard) -> None:
    rollout = _rollout(lambda n: {"n": n, "ok": True})
    rollout.flags = FlagSet.empty()
    agent = GuardAgent(guard, [rollout], process="p1", evaluate=False)
    for n in range(5):
        rollout(n)
    agent.tick()
    assert not guard.flags.get("listing").enabled  # shadow: nobody gets the candidate
    decision = guard.operate("listing", "promote", actor="bob", reason="shadow clean")
    assert (decision.kind, decision.step, decision.percent) == ("promoted", 0, 10.0)
    assert decision.evidence["shadow"]["comparisons"] == 5
    assert decision.evidence["shadow"]["mismatch_rate"] == 0.0
    record = guard.get("listing")
    assert (record.mode, record.status, record.step) == ("canary", "running", 0)
    assert guard.flags.get("listing").enabled
    with guard.engine.connect() as conn:
        entry = next(a for a in list_audit(conn, target="rollout:listing")
                     if a.action == "rollout.promote")  # fmt: skip
    assert entry.actor == "bob" and entry.reason == "shadow clean"
    assert entry.before == {"status": "running", "step": 0, "mode": "shadow"}
    assert entry.after == {"mode": "canary", "step": 0}
    agent.tick()
    assert rollout.mode is Mode.CANARY  # every process follows the stored mode


def test_promote_is_refused_outside_shadow_mode_and_once_finished(guard: RolloutGuard) -> None:
    guard.create("other", actor="alice", mode="canary")
    with pytest.raises(ValueError, match="only a rollout in shadow mode"):
        guard.operate("other", "promote", actor="bob")
    guard.operate("listing", "rollback", actor="bob")
    with pytest.raises(ValueError, match="rolled_back"):
        guard.operate("listing", "promote", actor="bob")
    with pytest.raises(ValueError, match="action must be one of"):
        guard.operate("listing", "launch", actor="bob")
    assert [d.kind for d in guard.decisions("other")] == ["started"]


def test_advance_is_refused_in_shadow_mode(guard: RolloutGuard) -> None:
    with pytest.raises(ValueError, match="promote it to canary first"):
        guard.operate("listing", "advance", actor="bob")
    assert guard.get("listing").mode == "shadow"
