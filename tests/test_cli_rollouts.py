"""``safeship rollouts ...`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from safeship.cli import app
from safeship.db import create_engine, upgrade
from safeship.flags.store import FlagStore
from safeship.rollouts import ArmWindow, Plan, RolloutGuard

runner = CliRunner()


def migrated(path: Path) -> str:
    url = f"sqlite:///{path}"
    assert runner.invoke(app, ["db", "upgrade", "--create", "--database-url", url]).exit_code == 0
    return url


def run(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["rollouts", *args, "--database-url", url])
    return result.exit_code, result.output


def test_rollouts_from_the_command_line(tmp_path: Path) -> None:
    url = migrated(tmp_path / "r.db")
    engine = create_engine(url)
    upgrade(engine)
    guard = RolloutGuard(engine, FlagStore(engine))
    guard.create("orders", actor="alice", plan=Plan(steps=(10, 50, 100)))
    guard.record_window(
        "orders",
        process="p",
        control=ArmWindow(requests=100, errors=1, histogram={112: 100}),
        candidate=ArmWindow(requests=10, errors=0, histogram={113: 10}),
    )
    code, output = run(url, "list")
    assert code == 0 and "orders" in output and "running" in output and "10%" in output
    code, output = run(url, "show", "orders")
    assert code == 0 and "1.00%" in output and "control" in output and "started" in output
    result = runner.invoke(app, ["rollouts", "show", "orders", "--json", "--database-url", url])
    assert json.loads(result.stdout)["arms"]["candidate"]["requests"] == 10
    code, output = run(url, "pause", "orders", "--reason", "lunch")
    assert code == 0 and "orders: paused (step 1, 10% candidate)" in output
    assert guard.get("orders").status == "paused"
    code, output = run(url, "resume", "orders")
    assert code == 0 and "resumed" in output
    code, output = run(url, "advance", "orders")
    assert code == 0 and "advanced (step 2, 50% candidate)" in output
    code, output = run(url, "rollback", "orders", "--reason", "errors")
    assert code == 0 and "rolled_back" in output
    assert FlagStore(engine).get("orders").enabled is False
    engine.dispose()


def test_errors_are_readable(tmp_path: Path) -> None:
    url = migrated(tmp_path / "e.db")
    code, output = run(url, "pause", "missing")
    assert code == 1 and "no rollout named 'missing'" in output
    engine = create_engine(url)
    guard = RolloutGuard(engine, FlagStore(engine))
    guard.create("orders", actor="alice")
    guard.operate("orders", "abort", actor="alice")
    code, output = run(url, "advance", "orders")
    assert code == 2 and "aborted; nothing to advance" in output
    assert "Traceback" not in output
    engine.dispose()


def test_emergency_reports_each_rollout_and_exits_3_when_something_was_not_done(
    tmp_path: Path,
) -> None:
    from tests.rollouts.conftest import allow_writes, refuse_writes

    url = migrated(tmp_path / "x.db")
    engine = create_engine(url)
    upgrade(engine)
    guard = RolloutGuard(engine, FlagStore(engine))
    for name in ("broken", "orders"):
        guard.create(name, actor="alice")
    declined = runner.invoke(
        app, ["rollouts", "emergency", "--reason", "drill", "--database-url", url], input="n\n"
    )
    # No terminal to ask on (an answer piped to stdin is not a person): refused, nothing done.
    assert declined.exit_code == 2 and "pass --yes" in declined.output
    assert guard.get("orders").status == "running"
    refuse_writes(engine, "safeship_rollouts", when="OLD.name = 'broken'")
    code, output = run(url, "emergency", "--reason", "r" * 2000, "--yes")
    assert code == 3, output
    assert "orders: rolled back" in output and "broken: failed" in output
    assert "write refused by the database" in output and "kill switch thrown" in output
    assert "incomplete" in output and guard.get("orders").status == "rolled_back"
    allow_writes(engine, "safeship_rollouts")
    code, output = run(url, "emergency", "--reason", "again", "--yes")
    assert code == 0 and "broken: rolled back" in output and "complete" in output
    assert not any(f.enabled for f in FlagStore(engine).all())
    engine.dispose()
