"""The guard's value types and errors: a stored rollout, a decision, what can go wrong,
and the per-process lock that keeps one transition at a time on an engine."""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from safeship.errors import SafeshipError
from safeship.rollouts._monitor import ArmWindow
from safeship.rollouts._plan import Plan
from safeship.rollouts._stats import GuardSettings, LatencyHistogram

__all__ = [
    "Decision",
    "MigrationPhase",
    "RollbackRefusedError",
    "RolloutConflictError",
    "RolloutExistsError",
    "RolloutFinishedError",
    "RolloutNotFoundError",
    "RolloutRecord",
]


class RolloutNotFoundError(SafeshipError, KeyError):
    def __str__(self) -> str:
        return f"no rollout named {self.args[0]!r}; create it with RolloutGuard.create()"


class RolloutExistsError(SafeshipError, ValueError):
    """A rollout with that name exists already (also when another writer just made it)."""


class RolloutFinishedError(SafeshipError, ValueError):
    """The rollout is rolled back, aborted or completed: no operator action applies."""

    def __init__(self, name: str, status: str, action: str) -> None:
        super().__init__(f"rollout {name!r} is {status}; nothing to {action}")
        self.name = name
        self.status = status


class RolloutConflictError(SafeshipError, ValueError):
    """The rollout changed since it was read (another operator, process or the guard
    moved it first): re-read it and decide again."""


class MigrationPhase(StrEnum):
    """Which schema change the guarded code path depends on.

    ``none``: no migration.  ``expand``: an expand-only migration (added tables, columns,
    indexes): the legacy path still works on the new schema, so rolling back is safe.
    ``contract``: a contract migration (dropped or renamed columns, tightened
    constraints) has run: the legacy path no longer matches the schema, so turning the
    candidate off would itself be an outage and safeship refuses to do it.
    """

    NONE = "none"
    EXPAND = "expand"
    CONTRACT = "contract"

    @classmethod
    def parse(cls, value: object) -> MigrationPhase:
        try:
            return cls(str(value))
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"migration_phase must be one of {allowed}, got {value!r}") from None


MAX_REVISION = 200


def check_revision(revision: str | None) -> str | None:
    """A migration revision id is optional, at most 200 printable characters."""
    if revision is None:
        return None
    if not revision or len(revision) > MAX_REVISION or not revision.isprintable():
        raise ValueError(
            f"migration_revision: 1 to {MAX_REVISION} printable characters (an Alembic "
            f"revision id such as '0042_drop_legacy_total'), got {revision[:50]!r}"
        )
    return revision


class RollbackRefusedError(SafeshipError, ValueError):
    """Rolling the code path back is refused: the rollout depends on a contract migration,
    and the legacy path no longer matches the schema."""

    def __init__(self, name: str, revision: str | None, action: str) -> None:
        migration = f"contract migration {revision!r}" if revision else "a contract migration"
        super().__init__(
            f"rollout {name!r} depends on {migration}: {action} would send traffic back to "
            "the legacy code path, which no longer matches the contracted schema (an outage "
            "of its own). Roll forward with a fixed candidate instead; if the schema was "
            f"restored, set the phase back first (safeship rollouts phase {name} expand)"
        )
        self.name = name
        self.revision = revision
        self.action = action


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    name: str
    mode: str
    status: str
    plan: Plan
    step: int
    step_started_at: datetime
    step_first_window: int
    threshold_bucket: int | None
    settings: GuardSettings
    version: int
    migration_phase: MigrationPhase = MigrationPhase.NONE
    migration_revision: str | None = None

    @property
    def rollback_safe(self) -> bool:
        """False once a contract migration the code path depends on has run."""
        return self.migration_phase is not MigrationPhase.CONTRACT

    @property
    def percent(self) -> float:
        return 0.0 if self.status in ("rolled_back", "aborted") else self.plan.steps[self.step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "status": self.status,
            "plan": self.plan.to_dict(),
            "step": self.step,
            "percent": self.percent,
            "step_started_at": self.step_started_at.isoformat(),
            "version": self.version,
            "migration_phase": self.migration_phase.value,
            "migration_revision": self.migration_revision,
            "rollback_safe": self.rollback_safe,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    rollout: str
    at: datetime
    kind: str
    actor: str
    step: int
    percent: float
    evidence: Any
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def settings_dict(s: GuardSettings) -> dict[str, Any]:
    return {
        "alpha": s.alpha,
        "error_share_of_alpha": s.error_share_of_alpha,
        "latency_quantile": s.latency_quantile,
        "min_control_for_threshold": s.min_control_for_threshold,
        "promotion_margin": s.promotion_margin,
        "promotion_beta": s.promotion_beta,
    }


def record_from_row(row: sa.RowMapping) -> RolloutRecord:
    return RolloutRecord(
        name=row["name"],
        mode=row["mode"],
        status=row["status"],
        plan=Plan.from_dict(row["plan"]),
        step=row["step"],
        step_started_at=aware(row["step_started_at"]),
        step_first_window=row["step_first_window"],
        threshold_bucket=row["threshold_bucket"],
        settings=GuardSettings(**row["settings"]),
        version=row["version"],
        migration_phase=MigrationPhase.parse(row["migration_phase"] or "none"),
        migration_revision=row["migration_revision"],
    )


_TRANSITION_LOCKS: weakref.WeakKeyDictionary[sa.Engine, threading.RLock] = (
    weakref.WeakKeyDictionary()
)
_LOCKS_GUARD = threading.Lock()


def transition_lock(engine: sa.Engine) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _TRANSITION_LOCKS.get(engine)
        if lock is None:
            lock = _TRANSITION_LOCKS[engine] = threading.RLock()
        return lock


class ArmSlot:
    """One arm's windows summed over a time slot (for charts)."""

    __slots__ = ("errors", "histogram", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.histogram = LatencyHistogram()

    def add(self, window: ArmWindow) -> None:
        self.requests += window.requests
        self.errors += window.errors
        self.histogram.merge(window.histogram)

    def to_dict(self) -> dict[str, Any]:
        n, hist = self.requests, self.histogram
        return {
            "requests": n,
            "error_rate": self.errors / n if n else None,
            "p50": hist.quantile(0.5),
            "p95": hist.quantile(0.95),
            "p99": hist.quantile(0.99),
        }
