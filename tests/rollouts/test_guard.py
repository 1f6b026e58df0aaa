"""The guard on real PostgreSQL: plans advance on evidence, a breach rolls back exactly once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, list_audit, upgrade
from safeship.flags.store import FlagStore
from safeship.observe._logging import ALERT
from safeship.rollouts import ArmWindow, Plan, RolloutGuard
from safeship.rollouts._stats import bucket_of

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _window(requests: int, errors: int, latency: float = 0.05) -> ArmWindow:
    return ArmWindow(requests=requests, errors=errors, histogram={bucket_of(latency): requests})


def test_healthy_rollout_advances_after_hold_and_sample(engine: sa.Engine) -> None:
    clock = Clock()
    flags = FlagStore(engine)
    guard = RolloutGuard(engine, flags, now=clock)
    guard.create("checkout-v2", actor="alice", plan=Plan(steps=(10, 50, 100), min_hold=60,
                 min_sample=100))  # fmt: skip
    assert flags.get("checkout-v2").enabled
    for _ in range(20):
        guard.record_window("checkout-v2", process="p1", control=_window(900, 9),
                            candidate=_window(100, 0))  # fmt: skip
    assert guard.evaluate("checkout-v2") is None  # healthy but not held long enough
    clock.now += timedelta(seconds=61)
    decision = guard.evaluate("checkout-v2")
    assert decision is not None
    assert (decision.kind, decision.percent) == ("advanced", 50.0)
    assert guard.get("checkout-v2").step == 1
    assert guard.get("checkout-v2").threshold_bucket is not None


def test_breach_rolls_back_in_an_audited_change_with_an_alert(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    flags = FlagStore(engine)
    notified: list[dict[str, object]] = []
    guard = RolloutGuard(engine, flags, notify=notified.append)
    guard.create("checkout-v2", actor="alice", plan=Plan(steps=(50, 100)))
    guard.record_window("checkout-v2", process="p1", control=_window(100, 1),
                        candidate=_window(100, 40))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="safeship.rollouts"):
        decision = guard.evaluate("checkout-v2")
    assert decision is not None
    assert decision.kind == "rolled_back"
    assert decision.evidence["verdict"]["breached_metric"] == "errors"
    assert not flags.get("checkout-v2").enabled
    assert guard.get("checkout-v2").status == "rolled_back"
    assert any(
        r.levelno == ALERT and "rollout.rolled_back" in r.getMessage() for r in caplog.records
    )
    assert notified[0]["kind"] == "rolled_back"
    assert guard.evaluate("checkout-v2") is None  # nothing more to decide
    with engine.connect() as conn:
        actions = [a.action for a in list_audit(conn, limit=20)]
    assert "rollout.rolled_back" in actions
    assert "flag.disable" in actions


def test_operators_pause_resume_advance_and_abort_with_audit(engine: sa.Engine) -> None:
    flags = FlagStore(engine)
    guard = RolloutGuard(engine, flags)
    guard.create("f", actor="alice", plan=Plan(steps=(1, 5, 100), min_hold=0, min_sample=0))
    assert guard.operate("f", "pause", actor="bob").kind == "paused"
    assert guard.evaluate("f") is None  # paused: no automatic advance
    assert guard.operate("f", "resume", actor="bob").kind == "resumed"
    assert guard.operate("f", "advance", actor="bob", reason="looks fine").percent == 5.0
    assert guard.operate("f", "abort", actor="bob").kind == "aborted"
    assert not flags.get("f").enabled
    with pytest.raises(ValueError, match="aborted"):
        guard.operate("f", "resume", actor="bob")
    kinds = [d.kind for d in guard.decisions("f")]
    assert kinds == ["aborted", "advanced", "resumed", "paused", "started"]


def test_two_processes_feed_one_rollout_and_one_breach_gives_one_rollback(
    engine: sa.Engine, postgres_url: str
) -> None:
    guard = RolloutGuard(engine, FlagStore(engine))
    guard.create("orders-batched", actor="alice", plan=Plan(steps=(50, 100)))
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/rollouts/fleet_child.py"),
                postgres_url,
                name,
                str(seed),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for name, seed in (("app-1", 1), ("app-2", 2))
    ]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    applied = [k for r in reports for k in r["decisions"]]
    assert applied.count("rolled_back") == 1
    kinds = [d.kind for d in guard.decisions("orders-batched")]
    assert kinds.count("rolled_back") == 1
    assert not FlagStore(engine).get("orders-batched").enabled
    with engine.connect() as conn:
        processes = set(
            conn.execute(sa.text("SELECT DISTINCT process FROM safeship_rollout_windows")).scalars()
        )
    assert processes == {"app-1", "app-2"}
