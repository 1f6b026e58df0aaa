"""The guard's value types and errors: a stored rollout, a decision, what can go wrong,
and the per-process lock that keeps one transition at a time on an engine."""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from safeship.errors import SafeshipError
from safeship.rollouts._monitor import ArmWindow
from safeship.rollouts._plan import Plan
from safeship.rollouts._stats import GuardSettings, LatencyHistogram

__all__ = [
    "Decision",
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
