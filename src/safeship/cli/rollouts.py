"""``safeship rollouts ...``: see guarded rollouts and steer them, audited as ``cli:<user>``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from safeship.cli._common import (
    DatabaseOption,
    actor,
    confirm_or_fail,
    fail,
    open_engine,
    or_fail,
    out,
    typer_app,
)
from safeship.rollouts._guard import (
    MigrationPhase,
    RollbackRefusedError,
    RolloutGuard,
    RolloutNotFoundError,
    RolloutRecord,
)

rollouts_app = typer_app(
    help="Guarded rollouts: state, control vs candidate, pause, advance, roll back."
)
Reason = Annotated[str | None, typer.Option(help="Why, for the audit trail.")]
T = TypeVar("T")


def _guard(database_url: str | None) -> RolloutGuard:
    from safeship.flags.store import FlagStore

    engine = open_engine(database_url)
    return RolloutGuard(engine, FlagStore(engine))


def _run(fn: Callable[[], T]) -> T:
    def translated() -> T:
        try:
            return fn()
        except (RolloutNotFoundError, RollbackRefusedError) as exc:
            fail(str(exc), code=1)

    return or_fail(translated)


def _ms(seconds: object) -> str:
    return "-" if not isinstance(seconds, float) else f"{seconds * 1000:.3g} ms"


def _rate(rate: object) -> str:
    return "-" if not isinstance(rate, float) else f"{rate * 100:.2f}%"


@rollouts_app.command("list")
def list_rollouts(database_url: DatabaseOption = None) -> None:
    """Every rollout with its status, mode, step and candidate traffic."""
    guard = _guard(database_url)
    table = Table()
    for column in ("rollout", "status", "mode", "step", "candidate %", "migration", "since"):
        table.add_column(column)
    for r in _run(guard.all):
        step = f"{r.step + 1}/{len(r.plan.steps)}"
        since = r.step_started_at.isoformat()[:19]
        table.add_row(r.name, r.status, r.mode, step, f"{r.percent:g}%", _phase(r), since)
    out.print(table)


def _phase(record: RolloutRecord) -> str:
    revision = f" {record.migration_revision}" if record.migration_revision else ""
    return f"{record.migration_phase.value}{revision}"


def _detail(guard: RolloutGuard, name: str) -> dict[str, Any]:
    record = guard.get(name)
    monitor, in_step = guard.monitor(record)
    return {
        **record.to_dict(),
        "arms": monitor.summary(),
        "verdict": monitor.verdict().to_dict(),
        "candidate_requests_in_step": in_step,
        "decisions": [d.to_dict() for d in guard.decisions(name, limit=20)],
    }


@rollouts_app.command("show")
def show(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """One rollout: control vs candidate side by side, the guard's reading, decisions."""
    guard = _guard(database_url)
    detail = _run(lambda: _detail(guard, name))
    if as_json:
        out.print_json(json.dumps(detail, default=str))
        return
    out.print(
        f"{name}: {detail['status']}, mode {detail['mode']}, step {detail['step'] + 1}/"
        f"{len(detail['plan']['steps'])} ({detail['percent']:g}% candidate)",
        highlight=False,
    )
    revision = detail["migration_revision"]
    phase = detail["migration_phase"] + (f" ({revision})" if revision else "")
    safe = "safe" if detail["rollback_safe"] else "REFUSED: a contract migration has run"
    out.print(f"migration phase {phase}; rollback {safe}", highlight=False)
    table = Table("", "control", "candidate")
    arms = detail["arms"]
    table.add_row("requests", *(str(arms[a]["requests"]) for a in ("control", "candidate")))
    table.add_row("error rate", *(_rate(arms[a]["error_rate"]) for a in ("control", "candidate")))
    for q in ("p50", "p95", "p99"):
        table.add_row(q, *(_ms(arms[a][q]) for a in ("control", "candidate")))
    out.print(table)
    out.print(f"guard e-value {detail['verdict']['combined']:.3g}", highlight=False)
    for d in detail["decisions"]:
        why = f" - {d['reason']}" if d["reason"] else ""
        out.print(f"  {d['at'][:19]} {d['kind']} at {d['percent']:g}% by {d['actor']}{why}")


def _operate(name: str, action: str, reason: str | None, database_url: str | None) -> None:
    guard = _guard(database_url)
    decision = _run(lambda: guard.operate(name, action, actor=actor(), reason=reason))
    out.print(
        f"{name}: {decision.kind} (step {decision.step + 1}, {decision.percent:g}% candidate)",
        highlight=False,
    )


@rollouts_app.command("pause")
def pause(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Hold the rollout at its step (the guard still rolls back on a breach)."""
    _operate(name, "pause", reason, database_url)


@rollouts_app.command("resume")
def resume(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Let a paused rollout advance again on evidence."""
    _operate(name, "resume", reason, database_url)


@rollouts_app.command("advance")
def advance(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Move to the plan's next step now (completes after the last)."""
    _operate(name, "advance", reason, database_url)


@rollouts_app.command("rollback")
def rollback(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Turn the flag off and mark the rollout rolled back."""
    _operate(name, "rollback", reason, database_url)


@rollouts_app.command("abort")
def abort(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Stop the rollout: flag off, rollout aborted."""
    _operate(name, "abort", reason, database_url)


@rollouts_app.command("promote")
def promote(name: str, reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Move a rollout from shadow to canary at its plan's first step."""
    _operate(name, "promote", reason, database_url)


@rollouts_app.command("phase")
def set_phase(
    name: str,
    phase: Annotated[
        MigrationPhase,
        typer.Argument(help="none, expand (rollback stays safe) or contract (rollback refused)."),
    ],
    revision: Annotated[
        str | None, typer.Option(help="The migration's revision id, e.g. 0042_drop_total.")
    ] = None,
    reason: Reason = None,
    database_url: DatabaseOption = None,
) -> None:
    """Record which migration the rollout's candidate depends on.

    After ``contract`` the guard, the rollback and abort commands and the emergency
    rollback refuse to send traffic back to the legacy path, and the kill switch leaves
    the flag on.
    """
    guard = _guard(database_url)
    record = _run(
        lambda: guard.set_migration_phase(
            name, phase, actor=actor(), revision=revision, reason=reason
        )
    )
    safe = "safe" if record.rollback_safe else "refused"
    out.print(f"{name}: migration phase {_phase(record)}; rollback {safe}", highlight=False)


INCOMPLETE_EXIT = 3
"""Exit code of ``safeship rollouts emergency`` when something could not be done."""


@rollouts_app.command("emergency")
def emergency(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Roll back every running or paused rollout, then throw every flag's kill switch.

    Prints what happened to each rollout; exits 3 when anything could not be done.
    """
    from safeship.rollouts._emergency import emergency_rollback

    guard = _guard(database_url)
    confirm_or_fail("Roll back every live rollout and kill every flag now?", yes=yes)
    report = emergency_rollback(guard, actor=actor(), reason=reason)
    for item in report.rollouts:
        detail = f": {item.error}" if item.error else ""
        out.print(f"  {item.name}: {item.outcome.replace('_', ' ')}{detail}", highlight=False)
    if report.kill_switch_error is None:
        out.print(f"kill switch thrown: {len(report.flags_changed)} flag(s) changed")
    if not report.complete:
        fail("emergency rollback incomplete: " + "; ".join(report.problems), INCOMPLETE_EXIT)
    out.print(f"emergency rollback complete: {len(report.rolled_back)} rollout(s) rolled back")
