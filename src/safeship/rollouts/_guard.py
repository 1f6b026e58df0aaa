"""The guard's database side: rollouts, shared windows, and decisions applied exactly once.

Every process ships its per-arm counts as *windows* (one row per flush), so a decision
folds in the whole fleet's traffic.  Evaluation locks the rollout's row (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL): one process decides at a time, and a decision re-reads the
status under the lock, so a breach seen by two processes is applied once.  Every state
change is also a compare-and-set on the row's ``version`` (SQLite has no row locks): of
two transitions from the same state one wins and the other raises
``RolloutConflictError``, never both.

Each transition is one transaction: the rollout's row, the flag's change (through the
flag store on the same connection), their audit records and the decision commit
together or not at all, so a crash at any point leaves flag and rollout agreeing.  The
flag's change is announced, and the decision logged and sent to ``notify``, only after
the commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter

from safeship.db._audit import fit_text, record_audit
from safeship.flags.store import FlagExistsError, FlagNotFoundError, FlagStore
from safeship.observe._logging import ALERT
from safeship.rollouts import _phase_rules as phase_rules
from safeship.rollouts import _shadow_store as shadow_store
from safeship.rollouts._monitor import ArmWindow, GuardMonitor
from safeship.rollouts._plan import Plan, next_action
from safeship.rollouts._records import (
    ArmSlot,
    Decision,
    MigrationPhase,
    RollbackRefusedError,
    RolloutConflictError,
    RolloutExistsError,
    RolloutFinishedError,
    RolloutNotFoundError,
    RolloutRecord,
    aware,
    check_revision,
    record_from_row,
    settings_dict,
    transition_lock,
)
from safeship.rollouts._schema import rollout_decisions, rollout_windows, rollouts
from safeship.rollouts._shadow_store import ShadowSummary
from safeship.rollouts._stats import GuardSettings, Verdict

__all__ = [
    "Decision",
    "MigrationPhase",
    "RollbackRefusedError",
    "RolloutConflictError",
    "RolloutExistsError",
    "RolloutFinishedError",
    "RolloutGuard",
    "RolloutNotFoundError",
    "RolloutRecord",
]

logger = logging.getLogger("safeship.rollouts")

DECISIONS = Counter(
    "safeship_rollout_decisions_total",
    "Guard decisions (advanced, rolled_back, paused, ...), by rollout and kind.",
    ["rollout", "kind"],
)


OPERATIONS = ("pause", "resume", "advance", "rollback", "abort", "promote")
LIVE = ("running", "paused")
UNDO = ("rollback", "abort")
UNDO_ATTEMPTS = 5


class RolloutGuard:
    """Creates and steers guarded rollouts; folds the fleet's windows into decisions."""

    def __init__(
        self,
        engine: sa.Engine,
        flags: FlagStore,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        notify: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``flags`` must store its flags in ``engine``'s database: one transaction
        changes a rollout and its flag together."""
        self.engine = engine
        self.flags = flags
        self._now = now
        self._notify = notify

    # -- reading -----------------------------------------------------------------------

    def get(self, name: str) -> RolloutRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.name == name)).mappings()
            found = row.first()
        if found is None:
            raise RolloutNotFoundError(name)
        return record_from_row(found)

    def live_names(self) -> list[str]:
        """Names of the running and paused rollouts, read without parsing their rows, so
        one unreadable row cannot hide the others from an emergency rollback."""
        query = sa.select(rollouts.c.name).where(rollouts.c.status.in_(LIVE))
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(rollouts.c.name)).scalars())

    def all(self) -> list[RolloutRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(rollouts).order_by(rollouts.c.name)).mappings().all()
        return [record_from_row(r) for r in rows]

    def decisions(self, name: str, *, limit: int = 50) -> list[Decision]:
        query = (
            sa.select(rollout_decisions)
            .where(rollout_decisions.c.rollout == name)
            .order_by(rollout_decisions.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Decision(**{**r, "at": aware(r["at"])}) for r in rows]

    def windows(
        self, name: str, *, after_id: int = 0, conn: sa.Connection | None = None
    ) -> list[tuple[int, datetime, ArmWindow, ArmWindow]]:
        query = (
            sa.select(rollout_windows)
            .where(rollout_windows.c.rollout == name, rollout_windows.c.id > after_id)
            .order_by(rollout_windows.c.id)
        )
        if conn is not None:
            rows = conn.execute(query).mappings().all()
        else:
            with self.engine.connect() as own:
                rows = own.execute(query).mappings().all()
        return [
            (
                r["id"],
                aware(r["at"]),
                ArmWindow.from_dict(r["control"]),
                ArmWindow.from_dict(r["candidate"]),
            )
            for r in rows
        ]

    def recent_decisions(self, *, limit: int = 20) -> list[Decision]:
        """The latest decisions over every rollout, newest first (the overview's feed)."""
        query = sa.select(rollout_decisions).order_by(rollout_decisions.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Decision(**{**r, "at": aware(r["at"])}) for r in rows]

    def series(
        self, name: str, *, resolution: float = 5.0, points: int = 120
    ) -> list[dict[str, Any]]:
        """Per time slot of ``resolution`` seconds (the fleet's windows summed), each arm's
        requests, error rate and p50/p95/p99: the last ``points`` slots, oldest first."""
        slots: dict[int, dict[str, ArmSlot]] = {}
        for _, at, control, candidate in self.windows(name):
            key = int(at.timestamp() // resolution)
            arms = slots.setdefault(key, {"control": ArmSlot(), "candidate": ArmSlot()})
            arms["control"].add(control)
            arms["candidate"].add(candidate)
        keep = sorted(slots)[-points:]
        return [
            {
                "at": datetime.fromtimestamp(key * resolution, UTC).isoformat(),
                **{arm: slot.to_dict() for arm, slot in slots[key].items()},
            }
            for key in keep
        ]

    def shadow(self, name: str, *, samples: int = 20) -> ShadowSummary:
        """The fleet's shadow comparisons of ``name``: totals, mismatch rate and the newest
        ``samples`` mismatches or candidate errors (zeros when none were shipped)."""
        with self.engine.connect() as conn:
            return shadow_store.read(conn, name, samples=samples)

    def monitor(
        self, record: RolloutRecord, *, conn: sa.Connection | None = None
    ) -> tuple[GuardMonitor, int]:
        """The rollout's monitor over every window so far, and the candidate requests
        served in the current step."""
        monitor = GuardMonitor(record.settings)
        in_step = 0
        for window_id, _, control, candidate in self.windows(record.name, conn=conn):
            total = control.requests + candidate.requests
            share = candidate.requests / total if total else 0.0
            monitor.observe(share=share, control=control, candidate=candidate)
            if window_id > record.step_first_window:
                in_step += candidate.requests
        return monitor, in_step

    # -- writing -----------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        actor: str,
        plan: Plan | None = None,
        settings: GuardSettings | None = None,
        mode: str = "canary",
        reason: str | None = None,
        migration_phase: MigrationPhase | str = MigrationPhase.NONE,
        migration_revision: str | None = None,
    ) -> RolloutRecord:
        """Start a guarded rollout of flag ``name`` (created off if missing) at its first step.

        ``migration_phase`` says which schema change the candidate depends on (see
        ``MigrationPhase``); after a ``contract`` one the guard refuses to roll back.
        """
        plan = plan or Plan()
        settings = settings or GuardSettings()
        if mode not in ("off", "shadow", "canary", "on"):
            raise ValueError(f"mode must be off, shadow, canary or on, got {mode!r}")
        phase = MigrationPhase.parse(migration_phase)
        revision = check_revision(migration_revision)
        now = self._now()
        try:
            with self._transaction() as conn:
                self._ensure_flag(conn, name, actor)
                self._insert(conn, name, actor, plan, settings, mode, reason, now, phase, revision)
                if phase is MigrationPhase.CONTRACT:
                    phase_rules.flag_safe_value(self, conn, name, True, actor=actor)
                if mode == "canary":
                    self.flags.rollout(
                        name, plan.steps[0], actor=actor, reason="rollout step 1", conn=conn
                    )
        except sa.exc.IntegrityError:
            raise RolloutExistsError(f"a rollout named {name!r} exists already") from None
        return self.get(name)

    def _ensure_flag(self, conn: sa.Connection, name: str, actor: str) -> None:
        """Create the rollout's flag (off) unless it exists, also when a concurrent
        ``create`` makes it first."""
        try:
            self.flags.get(name, conn=conn)
        except FlagNotFoundError:
            # Correct to ignore: another writer created it between our read and our insert.
            with contextlib.suppress(FlagExistsError):
                self.flags.create(
                    name, actor=actor, reason="created for a guarded rollout", conn=conn
                )

    def _insert(
        self, conn: sa.Connection, name: str, actor: str, plan: Plan, settings: GuardSettings,
        mode: str, reason: str | None, now: datetime, phase: MigrationPhase = MigrationPhase.NONE,
        revision: str | None = None,
    ) -> None:  # fmt: skip
        if conn.execute(sa.select(rollouts.c.name).where(rollouts.c.name == name)).first():
            raise RolloutExistsError(f"a rollout named {name!r} exists already")
        last = conn.execute(sa.select(sa.func.max(rollout_windows.c.id))).scalar() or 0
        row = {
            "name": name, "mode": mode, "status": "running", "plan": plan.to_dict(),
            "step": 0, "step_started_at": now, "step_first_window": last,
            "threshold_bucket": None, "settings": settings_dict(settings), "version": 1,
            "updated_at": now, "migration_phase": phase.value, "migration_revision": revision,
        }  # fmt: skip
        conn.execute(sa.insert(rollouts).values(**row))
        record_audit(
            conn, actor=actor, action="rollout.create", target=f"rollout:{name}",
            after={k: v for k, v in row.items() if k not in ("step_started_at", "updated_at")},
            reason=reason, at=now,
        )  # fmt: skip
        self._decide(conn, name, "started", actor, 0, plan.steps[0], None, reason, now)

    def record_window(
        self, name: str, *, process: str, control: ArmWindow, candidate: ArmWindow
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(rollout_windows).values(
                    rollout=name,
                    process=process[:200],
                    at=self._now(),
                    control=control.to_dict(),
                    candidate=candidate.to_dict(),
                )
            )

    def record_shadow(
        self,
        name: str,
        *,
        process: str,
        counts: Mapping[str, Any],
        samples: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Add one process's shadow counters (keys of ``shadow.COUNTERS``, since its last
        report) and its newest mismatch samples to the rollout's stored shadow results."""
        with self.engine.begin() as conn:
            shadow_store.record(
                conn, name, process=process, counts=counts, samples=samples, now=self._now()
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction on the guard's engine for the rollout's rows and, through the
        flag store, its flag; the flag's change is announced after the commit."""
        with self.engine.connect() as connection, self.flags.begin(connection) as conn:
            yield conn

    @contextlib.contextmanager
    def _locked(
        self, name: str, *, wait: bool
    ) -> Iterator[tuple[sa.Connection, RolloutRecord | None]]:
        # One transition at a time per process and engine: the others of this process
        # wait here rather than on the database's locks, holding no pooled connection.
        with transition_lock(self.engine), self._transaction() as conn:
            query = sa.select(rollouts).where(rollouts.c.name == name)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=not wait)
            row = conn.execute(query).mappings().first()
            yield conn, None if row is None else record_from_row(row)

    def evaluate(self, name: str) -> Decision | None:
        """Fold in every window, then roll back, advance or complete if the evidence says
        so.  Returns the decision applied, or None (also when another process is
        evaluating this rollout right now, or an operator moved it first)."""
        try:
            with self._locked(name, wait=False) as (conn, record):
                if record is None or record.status not in LIVE or record.mode != "canary":
                    return None
                decision = self._judge(conn, record)
        except RolloutConflictError:  # another writer moved it first; nothing was changed
            return None
        if decision is not None:
            self._after(decision)
        return decision

    def _judge(self, conn: sa.Connection, record: RolloutRecord) -> Decision | None:
        monitor, in_step = self.monitor(record, conn=conn)
        verdict = monitor.verdict()
        now = self._now()
        action = next_action(
            plan=record.plan, status=record.status, step=record.step, verdict=verdict,
            held_seconds=(now - record.step_started_at).total_seconds(),
            step_candidate_requests=in_step,
        )  # fmt: skip
        decision = None
        if action is not None:
            evidence = {"verdict": verdict.to_dict(), "arms": monitor.summary()}
            if action == "rollback" and not record.rollback_safe:
                decision = phase_rules.refuse_rollback(self, conn, record, evidence, verdict, now)
            elif action == "rollback":
                decision = self._roll_back(conn, record, "guard", evidence, verdict, now)
            else:
                decision = self._advance(conn, record, "guard", evidence, now, action)
        self._store_threshold(conn, record, monitor.threshold_bucket)
        return decision

    def _store_threshold(
        self, conn: sa.Connection, record: RolloutRecord, bucket: int | None
    ) -> None:
        if bucket != record.threshold_bucket:
            conn.execute(
                sa.update(rollouts)
                .where(rollouts.c.name == record.name)
                .values(threshold_bucket=bucket)
            )

    @staticmethod
    def _breach_reason(record: RolloutRecord, verdict: Verdict) -> str:
        return (
            f"{verdict.breached_metric} regressed (e-value {verdict.combined:.1f} >= "
            f"{1 / record.settings.alpha:.0f})"
        )

    def _roll_back(
        self, conn: sa.Connection, record: RolloutRecord, actor: str, evidence: Any,
        verdict: Verdict | None, now: datetime, reason: str | None = None,
    ) -> Decision:  # fmt: skip
        why = reason or (self._breach_reason(record, verdict) if verdict else "manual rollback")
        self._flag_off(conn, record.name, actor=actor, reason=f"rollback: {why}")
        self._set(conn, record, status="rolled_back", actor=actor, reason=why, now=now)
        return self._decide(
            conn, record.name, "rolled_back", actor, record.step, 0.0, evidence, why, now
        )

    def _flag_off(self, conn: sa.Connection, name: str, *, actor: str, reason: str) -> None:
        """Turn the rollout's flag off in the transition's transaction.  A deleted flag
        sends nobody to the candidate already, so undoing the rollout goes on (its
        processes switch to legacy)."""
        try:
            self.flags.set_enabled(name, False, actor=actor, reason=reason, conn=conn)
        except FlagNotFoundError:
            logger.warning("rollout.flag_missing", extra={"rollout": name, "actor": actor})

    def _advance(
        self, conn: sa.Connection, record: RolloutRecord, actor: str, evidence: Any,
        now: datetime, action: str, reason: str | None = None,
    ) -> Decision:  # fmt: skip
        if action == "complete":
            self.flags.rollout(record.name, 100, actor=actor, reason="rollout completed", conn=conn)
            self._set(conn, record, status="completed", actor=actor, reason=reason, now=now)
            return self._decide(
                conn, record.name, "completed", actor, record.step, 100.0, evidence, reason, now
            )
        step = record.step + 1
        percent = record.plan.steps[step]
        self.flags.rollout(
            record.name, percent, actor=actor, reason=f"rollout step {step + 1}", conn=conn
        )
        last = conn.execute(sa.select(sa.func.max(rollout_windows.c.id))).scalar() or 0
        self._set(
            conn, record, status=record.status, actor=actor, reason=reason, now=now,
            step=step, step_started_at=now, step_first_window=last,
        )  # fmt: skip
        return self._decide(
            conn, record.name, "advanced", actor, step, percent, evidence, reason, now
        )

    def _set(
        self, conn: sa.Connection, record: RolloutRecord, *, actor: str, reason: str | None,
        now: datetime, audit_action: str | None = None, **values: Any,
    ) -> None:  # fmt: skip
        changed = conn.execute(
            sa.update(rollouts)
            .where(rollouts.c.name == record.name, rollouts.c.version == record.version)
            .values(version=record.version + 1, updated_at=now, **values)
        ).rowcount
        if changed != 1:
            raise RolloutConflictError(
                f"rollout {record.name!r} changed since version {record.version} was read; "
                "re-read it and try again"
            )
        before: dict[str, Any] = {"status": record.status, "step": record.step}
        if "mode" in values:
            before["mode"] = record.mode
        if "migration_phase" in values:
            before["migration_phase"] = record.migration_phase.value
            before["migration_revision"] = record.migration_revision
        audited = ("status", "step", "mode", "migration_phase", "migration_revision")
        after = {k: v for k, v in values.items() if k in audited}
        record_audit(
            conn, actor=actor,
            action=audit_action or f"rollout.{values.get('status', record.status)}",
            target=f"rollout:{record.name}", before=before, after=after, reason=reason, at=now,
        )  # fmt: skip

    def _decide(
        self, conn: sa.Connection, name: str, kind: str, actor: str, step: int, percent: float,
        evidence: Any, reason: str | None, now: datetime,
    ) -> Decision:  # fmt: skip
        values = {
            "rollout": name, "at": now, "kind": kind, "actor": fit_text(actor, 200),
            "step": step, "percent": percent, "evidence": evidence, "reason": fit_text(reason),
        }  # fmt: skip
        new_id = conn.execute(
            sa.insert(rollout_decisions).values(**values).returning(rollout_decisions.c.id)
        ).scalar_one()
        return Decision(id=int(new_id), **values)

    def _after(self, decision: Decision) -> None:
        DECISIONS.labels(decision.rollout, decision.kind).inc()
        fields = {"rollout": decision.rollout, "actor": decision.actor, "step": decision.step}
        if decision.kind == "rolled_back":
            logger.log(ALERT, "rollout.rolled_back", extra={**fields, "reason": decision.reason})
        elif decision.kind == "rollback_refused":
            logger.log(
                ALERT, "rollout.rollback_refused", extra={**fields, "reason": decision.reason}
            )
        else:
            logger.info("rollout.decided", extra={**fields, "kind": decision.kind})
        if self._notify is not None:
            try:
                self._notify(decision.to_dict())
            except Exception:  # a failing webhook never undoes a decision
                logger.exception("rollout.notify_failed", extra=fields)

    # -- operators (admin, audited) ------------------------------------------------------

    def operate(
        self,
        name: str,
        action: str,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Decision:
        """``pause``, ``resume``, ``advance``, ``rollback`` or ``abort`` a rollout, or
        ``promote`` a shadow rollout to canary at its plan's first step.

        Raises ``RolloutFinishedError`` when it is no longer live, and
        ``RolloutConflictError`` when ``expected_version`` is stale or another writer
        moved it first: each state is left by one transition only.
        """
        if action not in OPERATIONS:
            raise ValueError(f"action must be one of {', '.join(OPERATIONS)}, got {action!r}")
        # Undoing applies to whatever state a concurrent writer left: re-read and retry.
        attempts = UNDO_ATTEMPTS if action in UNDO and expected_version is None else 1
        while True:
            try:
                decision = self._operate_once(name, action, actor, reason, expected_version)
            except RollbackRefusedError as refused:
                phase_rules.record_refusal(self, refused, actor=actor, reason=reason)
                raise
            except RolloutConflictError:
                attempts -= 1
                if attempts == 0:
                    raise
                continue
            self._after(decision)
            return decision

    def _operate_once(
        self, name: str, action: str, actor: str, reason: str | None, expected: int | None
    ) -> Decision:
        with self._locked(name, wait=True) as (conn, record):
            record = self._operable(name, record, action, expected)
            return self._operate(conn, record, action, actor, reason, self._now())

    def _operable(
        self, name: str, record: RolloutRecord | None, action: str, expected: int | None
    ) -> RolloutRecord:
        if record is None:
            raise RolloutNotFoundError(name)
        if record.status not in LIVE:
            raise RolloutFinishedError(name, record.status, action)
        if expected is not None and expected != record.version:
            raise RolloutConflictError(
                f"rollout {name!r} is at version {record.version}, not {expected}: it changed "
                "since you read it; re-read it and decide again"
            )
        if action == "advance" and record.mode == "shadow":
            raise ValueError(f"rollout {name!r} is in shadow mode: promote it to canary first")
        if action in UNDO and not record.rollback_safe:
            verb = "rolling back" if action == "rollback" else "aborting"
            raise RollbackRefusedError(name, record.migration_revision, verb)
        return record

    def set_migration_phase(
        self,
        name: str,
        phase: MigrationPhase | str,
        *,
        actor: str,
        revision: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> RolloutRecord:
        """Record which migration the rollout's candidate now depends on (audited, and in
        its decision timeline).

        Moving to ``contract`` also makes the flag's safe value *on*, so the kill switch of
        an emergency leaves the candidate serving; leaving ``contract`` makes it off again.
        """
        decision = phase_rules.set_migration_phase(
            self, name, phase, actor=actor, revision=revision, reason=reason,
            expected_version=expected_version,
        )  # fmt: skip
        self._after(decision)
        return self.get(name)

    def _operate(
        self, conn: sa.Connection, record: RolloutRecord, action: str, actor: str,
        reason: str | None, now: datetime,
    ) -> Decision:  # fmt: skip
        if action == "rollback":
            return self._roll_back(
                conn, record, actor, None, None, now, reason or "manual rollback"
            )
        if action == "promote":
            return self._promote(conn, record, actor, reason, now)
        if action == "abort":
            self._flag_off(conn, record.name, actor=actor, reason=reason or "rollout aborted")
            self._set(conn, record, status="aborted", actor=actor, reason=reason, now=now)
            return self._decide(
                conn, record.name, "aborted", actor, record.step, 0.0, None, reason, now
            )
        if action == "advance":
            last_step = record.step >= len(record.plan.steps) - 1
            return self._advance(
                conn, record, actor, None, now, "complete" if last_step else "advance", reason
            )
        status = "paused" if action == "pause" else "running"
        self._set(conn, record, status=status, actor=actor, reason=reason, now=now)
        percent = record.plan.steps[record.step]
        kind = "paused" if action == "pause" else "resumed"
        return self._decide(conn, record.name, kind, actor, record.step, percent, None, reason, now)

    def _promote(
        self, conn: sa.Connection, record: RolloutRecord, actor: str, reason: str | None,
        now: datetime,
    ) -> Decision:  # fmt: skip
        """Shadow → canary: the flag goes to the plan's first step and the step's hold time
        and sample start now; the shadow results so far are the decision's evidence."""
        if record.mode != "shadow":
            raise ValueError(
                f"rollout {record.name!r} is in {record.mode} mode; only a rollout in shadow "
                "mode can be promoted to canary"
            )
        percent = record.plan.steps[0]
        self.flags.rollout(
            record.name, percent, actor=actor, reason="promoted from shadow", conn=conn
        )
        shadow = shadow_store.read(conn, record.name, samples=0).to_dict()
        evidence = {"shadow": {k: v for k, v in shadow.items() if k != "samples"}}
        last = conn.execute(sa.select(sa.func.max(rollout_windows.c.id))).scalar() or 0
        self._set(
            conn, record, actor=actor, reason=reason, now=now, audit_action="rollout.promote",
            mode="canary", step=0, step_started_at=now, step_first_window=last,
        )  # fmt: skip
        return self._decide(conn, record.name, "promoted", actor, 0, percent, evidence, reason, now)
