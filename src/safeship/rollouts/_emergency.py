"""The emergency rollback: every live rollout rolled back, then every flag's kill switch.

An emergency action is never skipped in silence.  Each rollout is rolled back on its own
(one failing rollout stops neither the others nor the kill switch), the kill switch is
thrown whatever happened before it, and the report says, per rollout, whether it was
rolled back, had already finished, was refused (its candidate depends on a contract
migration: the legacy path no longer matches the schema, and the kill switch leaves its
flag on), or failed and why.  The control plane answers 207
and the CLI exits 3 when the report is not complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from safeship.db._audit import record_audit
from safeship.observe._logging import ALERT
from safeship.rollouts._guard import (
    RollbackRefusedError,
    RolloutFinishedError,
    RolloutGuard,
    RolloutNotFoundError,
)

__all__ = ["EmergencyReport", "RolloutOutcome", "emergency_rollback"]

logger = logging.getLogger("safeship.rollouts")

Outcome = Literal["rolled_back", "already_finished", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class RolloutOutcome:
    """What the emergency did to one rollout."""

    name: str
    outcome: Outcome
    status: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "status": self.status,
                "error": self.error}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EmergencyReport:
    """Everything the emergency did, and everything it could not do."""

    rollouts: tuple[RolloutOutcome, ...]
    flags_changed: dict[str, bool]
    kill_switch_error: str | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def rolled_back(self) -> list[str]:
        return [r.name for r in self.rollouts if r.outcome == "rolled_back"]

    @property
    def complete(self) -> bool:
        """True when every live rollout is undone and the kill switch is thrown."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "rolled_back": self.rolled_back,
            "rollouts": [r.to_dict() for r in self.rollouts],
            "kill_switch": {"thrown": self.kill_switch_error is None,
                            "error": self.kill_switch_error},
            "flags_changed": self.flags_changed,
            "problems": list(self.problems),
        }  # fmt: skip


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def roll_back_one(guard: RolloutGuard, name: str, *, actor: str, reason: str) -> RolloutOutcome:
    """Roll back ``name`` (``operate`` re-reads and retries when another writer moves it
    meanwhile).  Never raises: a failure is the outcome, with its error."""
    try:
        guard.operate(name, "rollback", actor=actor, reason=reason)
    except RolloutFinishedError as exc:
        return RolloutOutcome(name, "already_finished", status=exc.status)
    except RolloutNotFoundError:
        return RolloutOutcome(name, "already_finished", error="no longer exists")
    except RollbackRefusedError as exc:  # audited and logged by operate()
        return RolloutOutcome(name, "refused", status=_status(guard, name), error=str(exc))
    except Exception as exc:  # reported per rollout, the others go on
        logger.exception("rollout.emergency_rollback_failed", extra={"rollout": name})
        return RolloutOutcome(name, "failed", error=_describe(exc))
    return RolloutOutcome(name, "rolled_back", status="rolled_back")


def _status(guard: RolloutGuard, name: str) -> str | None:
    try:
        return guard.get(name).status
    except Exception:  # noqa: BLE001 - the outcome is reported without its status
        return None


def _live_names(guard: RolloutGuard, problems: list[str]) -> list[str]:
    try:
        return guard.live_names()
    except Exception as exc:  # the kill switch is still thrown
        logger.exception("rollout.emergency_listing_failed")
        problems.append(f"could not list the live rollouts: {_describe(exc)}")
        return []


def _kill_switch(
    guard: RolloutGuard, actor: str, reason: str
) -> tuple[dict[str, bool], str | None]:
    try:
        return guard.flags.kill(actor=actor, reason=reason), None
    except Exception as exc:  # reported, never hidden behind a 500
        logger.exception("rollout.emergency_kill_switch_failed")
        return {}, _describe(exc)


def emergency_rollback(
    guard: RolloutGuard, *, actor: str, reason: str | None = None
) -> EmergencyReport:
    """Roll back every running or paused rollout, then throw the flags' kill switch, and
    audit the whole as ``rollouts.emergency`` with each outcome."""
    why = f"emergency: {reason}" if reason else "emergency rollback"
    problems: list[str] = []
    outcomes = tuple(
        roll_back_one(guard, name, actor=actor, reason=why) for name in _live_names(guard, problems)
    )
    problems += [f"rollout {o.name!r} not rolled back: {o.error}" for o in outcomes
                 if o.outcome in ("failed", "refused")]  # fmt: skip
    changed, kill_error = _kill_switch(guard, actor, why)
    if kill_error is not None:
        problems.append(f"kill switch not thrown: {kill_error}")
    report = EmergencyReport(outcomes, changed, kill_error, tuple(problems))
    audit_error = _audit(guard, report, actor=actor, reason=reason or "emergency rollback")
    if audit_error is not None:
        report = replace(report, problems=(*report.problems, audit_error))
    _alert(report, actor)
    return report


def _audit(guard: RolloutGuard, report: EmergencyReport, *, actor: str, reason: str) -> str | None:
    """One audit record of the whole action (each rollback and the kill switch carry their
    own too); a failure to write it is returned as a problem, the actions stand."""
    try:
        with guard.engine.begin() as conn:
            record_audit(
                conn, actor=actor, action="rollouts.emergency", target="rollouts:*",
                after=report.to_dict(), reason=reason, at=datetime.now(UTC),
            )  # fmt: skip
    except Exception as exc:  # the rollbacks done must still be reported
        logger.exception("rollout.emergency_audit_failed")
        return f"audit record not written: {_describe(exc)}"
    return None


def _alert(report: EmergencyReport, actor: str) -> None:
    fields = {"actor": actor, "complete": report.complete, "rolled_back": report.rolled_back,
              "problems": list(report.problems)}  # fmt: skip
    logger.log(ALERT, "rollout.emergency", extra=fields)
