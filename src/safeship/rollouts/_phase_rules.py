"""What a contract migration changes in the guard: rollbacks refused (held and alerted
instead, refusals audited), the phase recorded, and the flag's safe value moved so the
kill switch leaves the candidate serving.  The guard's transitions stay in ``_guard``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from safeship.db._audit import record_audit
from safeship.rollouts._records import (
    Decision,
    MigrationPhase,
    RollbackRefusedError,
    RolloutRecord,
    check_revision,
)
from safeship.rollouts._schema import rollout_decisions
from safeship.rollouts._stats import Verdict

if TYPE_CHECKING:
    from safeship.rollouts._guard import RolloutGuard

logger = logging.getLogger("safeship.rollouts")


def refuse_rollback(
    guard: RolloutGuard, conn: sa.Connection, record: RolloutRecord, evidence: Any,
    verdict: Verdict, now: datetime,
) -> Decision | None:  # fmt: skip
    """A breach on a rollout past a contract migration: hold it (paused, so it never
    advances) and alert, once per hold, instead of sending traffic back to a legacy
    path that no longer matches the schema."""
    if record.status == "paused" and last_kind(conn, record.name) == "rollback_refused":
        return None  # refused and alerted already; an operator resuming re-arms it
    refusal = RollbackRefusedError(record.name, record.migration_revision, "rolling back")
    why = f"{guard._breach_reason(record, verdict)}; automatic rollback refused: {refusal}"
    guard._set(
        conn, record, status="paused", actor="guard", reason=why, now=now,
        audit_action="rollout.rollback_refused",
    )  # fmt: skip
    percent = record.plan.steps[record.step]
    return guard._decide(
        conn, record.name, "rollback_refused", "guard", record.step, percent, evidence, why, now
    )


def last_kind(conn: sa.Connection, name: str) -> str | None:
    query = (
        sa.select(rollout_decisions.c.kind)
        .where(rollout_decisions.c.rollout == name)
        .order_by(rollout_decisions.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).scalar()


def record_refusal(
    guard: RolloutGuard, refused: RollbackRefusedError, *, actor: str, reason: str | None
) -> None:
    """Audit and log a refused operator undo (nothing else changed)."""
    fields = {"rollout": refused.name, "actor": actor, "action": refused.action,
              "migration_revision": refused.revision}  # fmt: skip
    logger.warning("rollout.rollback_refused", extra=fields)
    try:
        with guard.engine.begin() as conn:
            record_audit(
                conn, actor=actor, action="rollout.rollback_refused",
                target=f"rollout:{refused.name}", before=None,
                after={"refused": refused.action, "migration_phase": "contract",
                       "migration_revision": refused.revision},
                reason=reason or str(refused), at=guard._now(),
            )  # fmt: skip
    except Exception:  # the refusal stands and is raised; the log line above records it
        logger.exception("rollout.refusal_audit_failed", extra=fields)


def set_migration_phase(
    guard: RolloutGuard, name: str, phase: MigrationPhase | str, *, actor: str,
    revision: str | None, reason: str | None, expected_version: int | None,
) -> Decision:  # fmt: skip
    """See ``RolloutGuard.set_migration_phase``; returns the timeline's decision."""
    new_phase = MigrationPhase.parse(phase)
    new_revision = check_revision(revision)
    with guard._locked(name, wait=True) as (conn, found):
        record = guard._operable(name, found, "change", expected_version)
        now = guard._now()
        was_contract = not record.rollback_safe
        if (new_phase is MigrationPhase.CONTRACT) != was_contract:
            flag_safe_value(guard, conn, name, not was_contract, actor=actor)
        guard._set(
            conn, record, actor=actor, reason=reason, now=now,
            audit_action="rollout.migration_phase", migration_phase=new_phase.value,
            migration_revision=new_revision,
        )  # fmt: skip
        what = f"migration phase {record.migration_phase.value} -> {new_phase.value}"
        if new_revision:
            what += f" ({new_revision})"
        evidence = {"from": record.migration_phase.value, "to": new_phase.value,
                    "revision": new_revision}  # fmt: skip
        return guard._decide(
            conn, name, "migration_phase", actor, record.step, record.percent, evidence,
            f"{what}: {reason}" if reason else what, now,
        )  # fmt: skip


def flag_safe_value(
    guard: RolloutGuard, conn: sa.Connection, name: str, value: bool, *, actor: str
) -> None:
    """The value the kill switch gives the rollout's flag (one audited flag change)."""
    guard.flags.change(
        name, lambda feature: feature, actor=actor, action="flag.safe_value",
        reason="contract migration: the candidate is the safe path" if value
        else "no contract migration: the legacy path is safe again",
        metadata={"safe_value": value}, conn=conn,
    )  # fmt: skip
