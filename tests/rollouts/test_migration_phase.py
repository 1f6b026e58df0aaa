"""Migration-phase-aware rollbacks (SQLite and PostgreSQL).

A rollout whose candidate depends on a contract migration is never rolled back onto the
contracted schema: the guard holds it and alerts instead, operators' rollback and abort
are refused with the reason, the emergency reports it per rollout and its kill switch
leaves the flag on.  Expand-only rollouts roll back as before.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safeship.cli import app
from safeship.db import create_engine, list_audit, upgrade
from safeship.flags.store import FlagStore
from safeship.observe._logging import ALERT
from safeship.rollouts import (
    ArmWindow,
    MigrationPhase,
    Plan,
    RollbackRefusedError,
    RolloutGuard,
    RolloutRecord,
    emergency_rollback,
)
from safeship.rollouts._stats import bucket_of
from tests.server.support import ADMIN_KEY, admin_headers, read_headers

PLAN = Plan(steps=(50, 100), min_hold=0, min_sample=0)


def _window(requests: int, errors: int) -> ArmWindow:
    return ArmWindow(requests=requests, errors=errors, histogram={bucket_of(0.05): requests})


def _breach(guard: RolloutGuard, name: str) -> None:
    guard.record_window(name, process="p1", control=_window(100, 1), candidate=_window(100, 40))


@pytest.fixture
def guard(plane_engine: sa.Engine) -> RolloutGuard:
    upgrade(plane_engine)
    return RolloutGuard(plane_engine, FlagStore(plane_engine))


def _audit_actions(engine: sa.Engine, name: str) -> list[str]:
    with engine.connect() as conn:
        return [a.action for a in list_audit(conn, limit=50, target=f"rollout:{name}")]


def test_a_new_rollout_has_no_migration_phase_and_rolls_back_as_before(
    guard: RolloutGuard,
) -> None:
    record = guard.create("plain", actor="alice", plan=PLAN)
    assert (record.migration_phase, record.migration_revision) == (MigrationPhase.NONE, None)
    assert record.rollback_safe and record.to_dict()["rollback_safe"] is True
    _breach(guard, "plain")
    decision = guard.evaluate("plain")
    assert decision is not None and decision.kind == "rolled_back"


def test_an_expand_only_rollout_is_rolled_back_by_the_guard(guard: RolloutGuard) -> None:
    guard.create("add-col", actor="a", plan=PLAN, migration_phase="expand",
                 migration_revision="0042_add_total")  # fmt: skip
    _breach(guard, "add-col")
    decision = guard.evaluate("add-col")
    assert decision is not None and decision.kind == "rolled_back"
    assert not guard.flags.get("add-col").enabled


def test_after_a_contract_migration_the_guard_holds_and_alerts_instead_of_rolling_back(
    guard: RolloutGuard, plane_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    notified: list[dict[str, Any]] = []
    guard = RolloutGuard(plane_engine, guard.flags, notify=notified.append)
    guard.create("drop-col", actor="a", plan=PLAN, migration_phase="contract",
                 migration_revision="0043_drop_total")  # fmt: skip
    _breach(guard, "drop-col")
    with caplog.at_level(logging.INFO, logger="safeship.rollouts"):
        decision = guard.evaluate("drop-col")
    assert decision is not None and decision.kind == "rollback_refused"
    assert decision.reason is not None
    assert "errors regressed" in decision.reason and "0043_drop_total" in decision.reason
    assert "contracted schema" in decision.reason
    record = guard.get("drop-col")
    assert (record.status, record.step) == ("paused", 0)  # held: it no longer advances
    flag = guard.flags.get("drop-col")
    assert flag.enabled and flag.definition["strategies"]  # candidate traffic unchanged
    alerts = [r for r in caplog.records if r.levelno == ALERT]
    assert [r.getMessage() for r in alerts] == ["rollout.rollback_refused"]
    assert [n["kind"] for n in notified] == ["rollback_refused"]
    assert "rollout.rollback_refused" in _audit_actions(plane_engine, "drop-col")
    # The same evidence again neither repeats the alert nor changes anything.
    _breach(guard, "drop-col")
    assert guard.evaluate("drop-col") is None
    assert guard.get("drop-col").version == record.version


def test_operators_rollback_and_abort_are_refused_with_the_reason_and_audited(
    guard: RolloutGuard, plane_engine: sa.Engine
) -> None:
    guard.create("drop-col", actor="a", plan=PLAN, migration_phase="contract",
                 migration_revision="0043_drop_total")  # fmt: skip
    before = guard.get("drop-col")
    for action in ("rollback", "abort"):
        with pytest.raises(RollbackRefusedError, match="0043_drop_total") as refused:
            guard.operate("drop-col", action, actor="bob", reason="looks bad")
        assert "roll forward" in str(refused.value).lower()
    after = guard.get("drop-col")
    assert (after.status, after.version) == (before.status, before.version)
    assert guard.flags.get("drop-col").enabled
    assert _audit_actions(plane_engine, "drop-col").count("rollout.rollback_refused") == 2


def test_phase_changes_are_audited_versioned_and_move_the_flags_safe_value(
    guard: RolloutGuard, plane_engine: sa.Engine
) -> None:
    created = guard.create("orders", actor="a", plan=PLAN, migration_phase="expand")
    assert guard.flags.get("orders").safe_value is False
    contracted = guard.set_migration_phase(
        "orders", "contract", actor="bob", revision="0050_drop_legacy", reason="ran contract"
    )
    assert contracted.version == created.version + 1
    assert (contracted.migration_phase, contracted.migration_revision) == (
        MigrationPhase.CONTRACT, "0050_drop_legacy",
    )  # fmt: skip
    assert not contracted.rollback_safe
    assert guard.flags.get("orders").safe_value is True
    assert guard.decisions("orders", limit=1)[0].kind == "migration_phase"
    assert "rollout.migration_phase" in _audit_actions(plane_engine, "orders")
    with pytest.raises(RollbackRefusedError):
        guard.operate("orders", "rollback", actor="bob")
    # The schema was restored: back to expand, and rolling back works again.
    guard.set_migration_phase("orders", MigrationPhase.EXPAND, actor="bob")
    assert guard.flags.get("orders").safe_value is False
    assert guard.operate("orders", "rollback", actor="bob").kind == "rolled_back"


def test_bad_phase_input_is_refused_and_changes_nothing(guard: RolloutGuard) -> None:
    record = guard.create("orders", actor="a", plan=PLAN)
    with pytest.raises(ValueError, match="migration_phase must be one of none, expand"):
        guard.set_migration_phase("orders", "shrink", actor="bob")
    with pytest.raises(ValueError, match="migration_revision: 1 to 200"):
        guard.set_migration_phase("orders", "contract", actor="bob", revision="x" * 201)
    with pytest.raises(ValueError, match="migration_phase must be one of"):
        guard.create("other", actor="a", migration_phase="later")
    assert guard.get("orders") == record
    assert guard.flags.get("orders").safe_value is False


def test_a_finished_rollouts_phase_cannot_change(guard: RolloutGuard) -> None:
    guard.create("orders", actor="a", plan=PLAN)
    guard.operate("orders", "rollback", actor="bob")
    with pytest.raises(ValueError, match="rolled_back; nothing to change"):
        guard.set_migration_phase("orders", "contract", actor="bob")


def test_the_emergency_reports_contract_rollouts_as_refused_and_keeps_their_flag_on(
    guard: RolloutGuard,
) -> None:
    guard.create("expand-one", actor="a", plan=PLAN, migration_phase="expand")
    guard.create("contract-one", actor="a", plan=PLAN, migration_phase="contract",
                 migration_revision="0043_drop_total")  # fmt: skip
    report = emergency_rollback(guard, actor="oncall", reason="incident 7")
    by_name = {o.name: o for o in report.rollouts}
    assert by_name["expand-one"].outcome == "rolled_back"
    refused = by_name["contract-one"]
    assert (refused.outcome, refused.status) == ("refused", "running")
    assert refused.error is not None and "0043_drop_total" in refused.error
    assert not report.complete
    assert any("contract-one" in p for p in report.problems)
    assert report.kill_switch_error is None
    assert not guard.flags.get("expand-one").enabled
    assert guard.flags.get("contract-one").enabled  # its safe value is on
    assert "contract-one" not in report.flags_changed


def _record(client: TestClient, name: str) -> RolloutRecord:
    guard: RolloutGuard = client.app.state.plane.rollouts  # type: ignore[attr-defined]
    return guard.get(name)


def test_the_api_sets_and_shows_the_phase_and_refuses_rollback_with_409(
    plane: TestClient,
) -> None:
    body = {"name": "orders", "plan": {"steps": [50, 100]}, "migration_phase": "expand",
            "migration_revision": "0042_add_total"}  # fmt: skip
    created = plane.post("/api/v1/rollouts", json=body, headers=admin_headers())
    assert created.status_code == 201, created.text
    assert created.json()["migration_phase"] == "expand"
    assert created.json()["rollback_safe"] is True
    stale = {"phase": "contract", "version": created.json()["version"] + 5}
    url = "/api/v1/rollouts/orders/migration-phase"
    assert plane.put(url, json=stale, headers=admin_headers()).status_code == 409
    assert plane.put(url, json={"phase": "contract"}, headers=read_headers()).status_code == 403
    assert plane.put(url, json={"phase": "shrink"}, headers=admin_headers()).status_code == 422
    bad_revision = {"phase": "contract", "revision": "a\nb"}
    assert plane.put(url, json=bad_revision, headers=admin_headers()).status_code == 422
    changed = plane.put(
        url, json={"phase": "contract", "revision": "0043_drop_total", "reason": "contracted"},
        headers=admin_headers(),
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert (changed.json()["migration_phase"], changed.json()["rollback_safe"]) == (
        "contract", False,
    )  # fmt: skip
    refused = plane.post("/api/v1/rollouts/orders/rollback", headers=admin_headers())
    assert refused.status_code == 409
    assert "contracted schema" in refused.json()["detail"]
    detail = plane.get("/api/v1/rollouts/orders", headers=read_headers()).json()
    assert detail["migration_revision"] == "0043_drop_total"
    assert detail["decisions"][0]["kind"] == "migration_phase"
    assert _record(plane, "orders").status == "running"
    missing = plane.put("/api/v1/rollouts/nope/migration-phase", json={"phase": "expand"},
                        headers=admin_headers())  # fmt: skip
    assert missing.status_code == 404
    emergency = plane.post("/api/v1/rollouts/emergency", json={"confirm": "ROLLBACK"},
                           headers=admin_headers())  # fmt: skip
    assert emergency.status_code == 207
    assert emergency.json()["rollouts"][0]["outcome"] == "refused"


def test_the_dashboard_shows_the_phase(plane: TestClient) -> None:
    guard: RolloutGuard = plane.app.state.plane.rollouts  # type: ignore[attr-defined]
    guard.create("safe", actor="a", plan=PLAN, migration_phase="expand")
    guard.create("held", actor="a", plan=PLAN, migration_phase="contract",
                 migration_revision="0043_drop_total")  # fmt: skip
    assert plane.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False).status_code == 303
    safe = plane.get("/rollouts/safe").text
    assert 'data-phase="expand"' in safe and "Rolling back is safe" in safe
    held = plane.get("/rollouts/held").text
    assert 'data-phase="contract"' in held
    assert '<code id="phase-revision">0043_drop_total</code>' in held
    assert "Rollback refused" in held


def test_the_cli_sets_and_shows_the_phase(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(url)
    upgrade(engine)
    RolloutGuard(engine, FlagStore(engine)).create("orders", actor="a", plan=PLAN)
    runner = CliRunner()
    result = runner.invoke(app, ["rollouts", "phase", "orders", "contract", "--revision",
                                 "0043_drop_total", "--database-url", url])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "migration phase contract 0043_drop_total; rollback refused" in result.output
    shown = runner.invoke(app, ["rollouts", "show", "orders", "--database-url", url])
    assert "rollback REFUSED" in shown.output
    rollback = runner.invoke(app, ["rollouts", "rollback", "orders", "--database-url", url])
    assert rollback.exit_code == 1 and "contracted schema" in rollback.output
    wrong = runner.invoke(app, ["rollouts", "phase", "orders", "later", "--database-url", url])
    assert wrong.exit_code == 2
    engine.dispose()


def test_the_migration_adds_the_phase_to_existing_rollouts_and_downgrades(
    plane_url: str,
) -> None:
    from alembic import command

    from safeship.db._migrate import _config

    engine = create_engine(plane_url)
    try:
        upgrade(engine, "0009_idempotency")
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        old_rows = sa.table(
            "safeship_rollouts",
            sa.column("name"), sa.column("mode"), sa.column("status"),
            sa.column("plan", sa.JSON()), sa.column("step"),
            sa.column("step_started_at", sa.DateTime(timezone=True)),
            sa.column("step_first_window"), sa.column("settings", sa.JSON()),
            sa.column("version"), sa.column("updated_at", sa.DateTime(timezone=True)),
        )  # fmt: skip
        with engine.begin() as conn:
            conn.execute(
                sa.insert(old_rows).values(
                    name="old",
                    mode="canary",
                    status="running",
                    plan=PLAN.to_dict(),
                    step=0,
                    step_started_at=moment,
                    step_first_window=0,
                    settings={},
                    version=1,
                    updated_at=moment,
                )
            )
        assert upgrade(engine, "0010_rollout_phase") == "0010_rollout_phase"
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT migration_phase, migration_revision FROM safeship_rollouts")
            ).one()
        assert tuple(row) == ("none", None)
        with engine.begin() as conn:
            command.downgrade(_config(conn), "0009_idempotency")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("safeship_rollouts")}
        assert "migration_phase" not in columns and "migration_revision" not in columns
        assert "name" in columns
    finally:
        engine.dispose()
