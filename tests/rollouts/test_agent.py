"""The guard agent never stops guarding because one rollout fails (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from safeship.db import upgrade
from safeship.flags._flagset import FlagSet
from safeship.flags.store import FlagStore
from safeship.rollouts import GuardAgent, Mode, Plan, Rollout, RolloutGuard
from safeship.rollouts._schema import rollouts


def _rollout(name: str, flags: FlagSet) -> Rollout:
    return Rollout(name, legacy=lambda: "old", candidate=lambda: "new", flags=flags, mode="canary")


def _breach(rollout: Rollout) -> None:
    for _ in range(100):
        rollout.recorder.record("control", error=False, seconds=0.01)
        rollout.recorder.record("candidate", error=True, seconds=0.01)


def test_an_unreadable_rollout_does_not_stop_the_agent_guarding_the_others(
    plane_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(plane_engine)
    store = FlagStore(plane_engine)
    guard = RolloutGuard(plane_engine, store)
    for name in ("broken", "checkout"):
        guard.create(name, actor="alice", plan=Plan(steps=(50, 100)))
    with plane_engine.begin() as conn:  # a row no process can read any more
        conn.execute(
            sa.update(rollouts).where(rollouts.c.name == "broken").values(plan={"steps": []})
        )
    flags = FlagSet.from_unleash(store.state()[1])
    broken, checkout = _rollout("broken", flags), _rollout("checkout", flags)
    _breach(broken)
    _breach(checkout)
    agent = GuardAgent(guard, [broken, checkout], process="p1")
    with caplog.at_level(logging.ERROR, logger="safeship.rollouts"):
        decisions = agent.tick()
    assert [(d.rollout, d.kind) for d in decisions] == [("checkout", "rolled_back")]
    assert guard.get("checkout").status == "rolled_back" and checkout.mode is Mode.OFF
    assert not store.get("checkout").enabled
    failed = [r for r in caplog.records if r.getMessage() == "rollout.agent_rollout_failed"]
    assert [getattr(r, "rollout", None) for r in failed] == ["broken"]
    _breach(checkout)
    assert agent.tick() == []  # the next tick goes on, nothing left to decide
