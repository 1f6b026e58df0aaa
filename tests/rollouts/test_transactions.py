"""Each rollout transition is one transaction (SQLite and PostgreSQL).

The rollout's row, its flag, their audit records and the decision commit together: a
process killed with SIGKILL between the flag's write and the rollout's, or a database
that refuses the rollout's write, leaves flag and rollout as they were, agreeing.  The
flag's change is announced (PostgreSQL NOTIFY, the ``publish`` callback) only after the
commit, and never for a transaction that rolled back.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import list_audit, upgrade
from safeship.flags._authoring import rollout_percent
from safeship.flags._records import FlagRecord
from safeship.flags.store import FlagStore
from safeship.rollouts import ArmWindow, Plan, RolloutGuard, emergency_rollback
from safeship.rollouts._records import RolloutRecord
from safeship.rollouts._stats import bucket_of
from tests.rollouts.conftest import allow_writes, refuse_writes

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = "orders"
CHILD = ROOT / "tests/rollouts/crash_child.py"
TRANSITIONS = ("rollback", "abort", "advance", "promote", "evaluate")
DECIDED = {"rollback": "rolled_back", "abort": "aborted", "advance": "advanced",
           "promote": "promoted", "evaluate": "rolled_back",
           "emergency": "rolled_back"}  # fmt: skip


@pytest.fixture
def engine(plane_engine: sa.Engine) -> sa.Engine:
    upgrade(plane_engine)
    return plane_engine


def _window(requests: int, errors: int) -> ArmWindow:
    return ArmWindow(requests=requests, errors=errors, histogram={bucket_of(0.05): requests})


def start(guard: RolloutGuard, transition: str) -> None:
    """A live rollout that ``transition`` moves: shadow for promote, a breach for evaluate."""
    if transition == "evaluate":
        guard.create(ROLLOUT, actor="alice", plan=Plan(steps=(50, 100)))
        guard.record_window(ROLLOUT, process="p1", control=_window(100, 1),
                            candidate=_window(100, 40))  # fmt: skip
        return
    mode = "shadow" if transition == "promote" else "canary"
    guard.create(ROLLOUT, actor="alice", plan=Plan(steps=(10, 50, 100), min_hold=0,
                 min_sample=0), mode=mode)  # fmt: skip


def perform(guard: RolloutGuard, transition: str) -> None:
    if transition == "evaluate":
        assert guard.evaluate(ROLLOUT) is not None
    elif transition == "emergency":
        assert emergency_rollback(guard, actor="oncall").complete
    else:
        guard.operate(ROLLOUT, transition, actor="oncall")


def candidate_share(flag: FlagRecord) -> float:
    """The percentage of traffic the flag sends to the candidate."""
    return (rollout_percent(flag.definition) or 0.0) if flag.enabled else 0.0


def planned_share(rollout: RolloutRecord) -> float:
    """The percentage the rollout's state says the candidate gets."""
    return rollout.percent if rollout.mode == "canary" else 0.0


def snapshot(guard: RolloutGuard) -> dict[str, Any]:
    flag, rollout = guard.flags.get(ROLLOUT), guard.get(ROLLOUT)
    assert candidate_share(flag) == planned_share(rollout), (flag.definition, rollout)
    with guard.engine.connect() as conn:
        audit = [(a.action, a.target) for a in list_audit(conn, limit=500)]
    return {
        "flag": (flag.version, flag.definition),
        "rollout": (rollout.status, rollout.mode, rollout.step, rollout.version),
        "flags_version": guard.flags.version(),
        "decisions": [d.kind for d in guard.decisions(ROLLOUT)],
        "audit": audit,
    }


def crash_inside(url: str, transition: str, marker: Path) -> None:
    """Run ``transition`` in a child process and SIGKILL it between the flag's write and
    the rollout's (the child signals when it is there)."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), url, transition, str(marker)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # waiting for a state, not for time to pass
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the child never reached the rollout's row"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL


def wait_for_the_dead_transaction_to_end(engine: sa.Engine, marker: Path) -> None:
    """On PostgreSQL the killed child's server process (its id is in ``marker``) aborts its
    transaction when it reads the closed socket, then exits; wait for that (its locks gone)
    before going on.  Each look is its own transaction: within one, PostgreSQL answers
    pg_stat_activity from the snapshot it took at the first look, which would show the
    dead transaction for ever once it was seen."""
    if engine.dialect.name != "postgresql":
        return  # SQLite's lock went with the process
    backend = int(marker.read_text())
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while conn.execute(query, {"pid": backend}).scalar_one():
            conn.rollback()  # the next look reads pg_stat_activity afresh
            assert time.monotonic() < deadline, "the killed transaction never ended"
            time.sleep(0.02)


@pytest.mark.parametrize("transition", [*TRANSITIONS, "emergency"])
def test_a_crash_between_the_flag_and_the_rollout_leaves_both_as_they_were(
    engine: sa.Engine, plane_url: str, transition: str, tmp_path: Path
) -> None:
    guard = RolloutGuard(engine, FlagStore(engine))
    start(guard, transition)
    before = snapshot(guard)
    crash_inside(plane_url, transition, tmp_path / "paused")
    wait_for_the_dead_transaction_to_end(engine, tmp_path / "paused")
    assert snapshot(guard) == before  # the flag's change went with the rollout's
    perform(guard, transition)  # nothing is left locked or half done: it applies again
    after = snapshot(guard)
    assert after["decisions"][0] == DECIDED[transition]
    assert after["flags_version"] > before["flags_version"]


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_a_refused_rollout_write_rolls_the_flag_change_back_too(
    engine: sa.Engine, transition: str
) -> None:
    guard = RolloutGuard(engine, FlagStore(engine))
    start(guard, transition)
    before = snapshot(guard)
    refuse_writes(engine, "safeship_rollouts", when=f"OLD.name = '{ROLLOUT}'")
    with pytest.raises(sa.exc.DBAPIError, match="write refused by the database"):
        perform(guard, transition)
    assert snapshot(guard) == before
    allow_writes(engine, "safeship_rollouts")
    perform(guard, transition)
    assert snapshot(guard)["decisions"][0] == DECIDED[transition]


def test_a_transition_announces_its_flag_change_once_after_it_commits(
    engine: sa.Engine,
) -> None:
    seen: list[tuple[int, bool, str]] = []
    reader = RolloutGuard(engine, FlagStore(engine))

    def publish(version: int) -> None:  # another connection sees the whole transition
        seen.append((version, reader.flags.get(ROLLOUT).enabled, reader.get(ROLLOUT).status))

    guard = RolloutGuard(engine, FlagStore(engine, publish=publish))
    start(guard, "rollback")
    seen.clear()
    guard.operate(ROLLOUT, "rollback", actor="oncall")
    assert seen == [(guard.flags.version(), False, "rolled_back")]


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_a_transition_that_rolls_back_announces_nothing(engine: sa.Engine, transition: str) -> None:
    published: list[int] = []
    guard = RolloutGuard(engine, FlagStore(engine, publish=published.append))
    start(guard, transition)
    published.clear()
    with listening(engine) as notified:
        refuse_writes(engine, "safeship_rollouts", when=f"OLD.name = '{ROLLOUT}'")
        with pytest.raises(sa.exc.DBAPIError):
            perform(guard, transition)
        # A later change's announcement comes after any earlier one: it closes the list.
        sentinel = guard.flags.create("sentinel", actor="test").version
        assert published == [sentinel]
        on_postgres = engine.dialect.name == "postgresql"
        assert notified(str(sentinel)) == ([str(sentinel)] if on_postgres else [])


class listening:  # noqa: N801 - reads as the context manager it is
    """On PostgreSQL, LISTEN for flag changes; ``notified(last)`` returns every payload
    up to and including ``last`` (SQLite has no NOTIFY: an empty list)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.conn: Any = None

    def __enter__(self) -> Callable[[str], list[str]]:
        if self.engine.dialect.name == "postgresql":
            import psycopg

            url = self.engine.url.set(drivername="postgresql")
            self.conn = psycopg.connect(url.render_as_string(hide_password=False),
                                        autocommit=True)  # fmt: skip
            self.conn.execute("LISTEN safeship_flags")
        return self.notified

    def notified(self, last: str) -> list[str]:
        if self.conn is None:
            return []
        payloads: list[str] = []
        for notify in self.conn.notifies(timeout=30):
            payloads.append(notify.payload)
            if notify.payload == last:
                break
        return payloads

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
