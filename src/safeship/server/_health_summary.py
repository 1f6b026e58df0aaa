"""The overview's "is it healthy" rules, as pure functions over plain readings.

The control plane gathers what it knows (flags, rollouts, breakers, the outbox, recent
alerts, the database) into the value objects below; :func:`summarize` judges each section
``pass``, ``warn`` or ``fail`` with the reasons in words, and the verdict is ``pass`` only
when every section passes.  No I/O and no clock: ``now`` is an input, so every rule is
unit-tested (tests/server/test_health_summary.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
SECTIONS = ("flags", "rollouts", "breakers", "outbox", "alerts", "database")
#: Sections judged only when their reading is there (the table is in this database).
OPTIONAL_SECTIONS = ("idempotency",)
#: Rollout statuses that still steer traffic.
LIVE_ROLLOUTS = frozenset({"running", "paused"})
#: Breaker states that turn calls away (all or most of them).
OPEN_STATES = frozenset({"open", "forced_open", "half_open"})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a reading turns into a warning (validated at construction)."""

    oldest_pending: timedelta = timedelta(minutes=5)
    """A pending event older than this is a stuck backlog even with relays alive."""
    alert_window: timedelta = timedelta(hours=1)
    """Alerts younger than this make the alerts section warn; older ones are history."""

    def __post_init__(self) -> None:
        if self.oldest_pending <= timedelta(0):
            raise ValueError("Thresholds.oldest_pending must be positive")
        if self.alert_window <= timedelta(0):
            raise ValueError("Thresholds.alert_window must be positive")


@dataclass(frozen=True, slots=True)
class FlagView:
    name: str
    enabled: bool
    rollout_percent: float | None
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class ArmView:
    requests: int
    error_rate: float | None
    p95: float | None
    """Seconds."""


@dataclass(frozen=True, slots=True)
class RolloutView:
    name: str
    status: str
    mode: str
    percent: float
    control: ArmView
    candidate: ArmView
    breach: bool
    """The guard's sequential test crossed its threshold (it rolls back on its next look)."""


@dataclass(frozen=True, slots=True)
class BreakerView:
    service: str
    name: str
    instance: str
    state: str
    mode: str
    since: datetime | None
    """When the breaker entered its state (its last transition), if it reported one."""
    stale: bool


@dataclass(frozen=True, slots=True)
class OutboxView:
    pending: int
    dead: int
    oldest_age_seconds: float
    relays: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class IdempotencyView:
    """Idempotency keys in ``safeship_idempotency`` (the SQL key store's table)."""

    in_flight: int = 0
    """First requests running now, their lease alive."""
    unknown: int = 0
    """Keys whose first run raised or died: it may have acted, nobody knows."""
    completed_last_hour: int = 0
    """Keys claimed in the last hour whose response is stored."""
    readable: bool = True


@dataclass(frozen=True, slots=True)
class AlertView:
    at: datetime
    kind: str
    subject: str
    actor: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class DatabaseView:
    reachable: bool
    in_use: int | None = None
    idle: int | None = None
    capacity: int | None = None
    """Connections the pool may open (size + overflow); None when unbounded."""
    waiting: int | None = None
    """Sessions waiting on a lock (PostgreSQL); None where the server cannot say."""
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Readings:
    """Everything the overview judges; a section the plane could not read is None."""

    now: datetime
    database: DatabaseView
    flags: Sequence[FlagView] | None = ()
    killed_at: datetime | None = None
    rollouts: Sequence[RolloutView] | None = ()
    breakers: Sequence[BreakerView] | None = ()
    outbox: OutboxView | None = None
    alerts: Sequence[AlertView] | None = ()
    idempotency: IdempotencyView | None = None
    """None when the idempotency table is not in this database (no section then)."""


@dataclass(frozen=True, slots=True)
class Section:
    status: Status
    findings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "findings": list(self.findings)}


@dataclass(frozen=True, slots=True)
class Summary:
    verdict: Status
    sections: dict[str, Section]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "sections": {name: s.to_dict() for name, s in self.sections.items()},
        }


def worst(statuses: Sequence[Status]) -> Status:
    """The most serious of ``statuses`` (``pass`` for none)."""
    return max(statuses, key=_RANK.__getitem__, default="pass")


def _section(findings: Sequence[tuple[Status, str]], ok: str) -> Section:
    if not findings:
        return Section("pass", (ok,))
    return Section(worst([s for s, _ in findings]), tuple(text for _, text in findings))


def _unreadable(what: str) -> Section:
    return Section("fail", (f"{what} could not be read: the database does not answer",))


def judge_flags(flags: Sequence[FlagView], killed_at: datetime | None) -> Section:
    found: list[tuple[Status, str]] = []
    if killed_at is not None:
        found.append(("warn", "the kill switch is engaged: every flag serves its safe value"))
    on = sum(1 for f in flags if f.enabled)
    return _section(found, f"{len(flags)} flag(s), {on} on")


def judge_rollouts(rollouts: Sequence[RolloutView]) -> Section:
    found: list[tuple[Status, str]] = []
    for r in rollouts:
        if r.status in LIVE_ROLLOUTS and r.breach:
            found.append(("fail", f"{r.name}: the candidate is worse than control (breach)"))
        elif r.status == "paused":
            found.append(("warn", f"{r.name}: paused, waiting for an operator"))
        elif r.status == "rolled_back":
            found.append(("warn", f"{r.name}: rolled back"))
    live = sum(1 for r in rollouts if r.status in LIVE_ROLLOUTS)
    return _section(found, f"{live} live rollout(s), none regressing")


def judge_breakers(breakers: Sequence[BreakerView]) -> Section:
    found: list[tuple[Status, str]] = []
    for b in breakers:
        where = f"{b.service}/{b.name} on {b.instance}"
        if b.state in OPEN_STATES:
            found.append(("warn", f"{where} is {b.state.replace('_', ' ')}"))
        elif b.stale:
            found.append(("warn", f"{where} has not reported for over a minute"))
    return _section(found, f"{len(breakers)} breaker(s), all closed")


def judge_outbox(outbox: OutboxView, thresholds: Thresholds) -> Section:
    found: list[tuple[Status, str]] = []
    if outbox.pending and not outbox.relays:
        found.append(("warn", f"{outbox.pending} event(s) pending and no relay alive"))
    elif outbox.oldest_age_seconds > thresholds.oldest_pending.total_seconds():
        found.append(("warn", f"the oldest pending event waits {outbox.oldest_age_seconds:.0f} s"))
    if outbox.dead:
        found.append(("warn", f"{outbox.dead} dead letter(s) to retry or purge"))
    return _section(found, f"{outbox.pending} pending, {outbox.relays} relay(s) alive")


def judge_alerts(alerts: Sequence[AlertView], now: datetime, thresholds: Thresholds) -> Section:
    recent = [a for a in alerts if now - a.at <= thresholds.alert_window]
    found: list[tuple[Status, str]] = [
        ("warn", f"{a.subject}: {a.kind.replace('_', ' ')} by {a.actor}") for a in recent
    ]
    return _section(found, "no alert in the last hour")


def judge_idempotency(keys: IdempotencyView) -> Section:
    if not keys.readable:
        return _unreadable("idempotency keys")
    found: list[tuple[Status, str]] = []
    if keys.unknown:
        found.append(
            ("warn", f"{keys.unknown} key(s) with an unknown outcome: check they did not act")
        )
    return _section(
        found,
        f"{keys.in_flight} in flight, {keys.completed_last_hour} completed in the last hour",
    )


def judge_database(db: DatabaseView) -> Section:
    if not db.reachable:
        return Section("fail", (f"the database does not answer{_colon(db.detail)}",))
    found: list[tuple[Status, str]] = []
    if db.capacity is not None and db.in_use is not None and db.in_use >= db.capacity:
        found.append(("warn", f"the pool is exhausted: {db.in_use} of {db.capacity} in use"))
    if db.waiting:
        found.append(("warn", f"{db.waiting} session(s) waiting on a lock"))
    return _section(found, "reachable, pool has room")


def _colon(detail: str | None) -> str:
    return f": {detail}" if detail else ""


def summarize(readings: Readings, thresholds: Thresholds | None = None) -> Summary:
    """Judge every section; the verdict is the worst of them."""
    t = thresholds or Thresholds()
    r = readings
    sections = {
        "flags": _unreadable("flags") if r.flags is None else judge_flags(r.flags, r.killed_at),
        "rollouts": _unreadable("rollouts") if r.rollouts is None else judge_rollouts(r.rollouts),
        "breakers": _unreadable("breakers") if r.breakers is None else judge_breakers(r.breakers),
        "outbox": _unreadable("the outbox") if r.outbox is None else judge_outbox(r.outbox, t),
        "alerts": _unreadable("alerts") if r.alerts is None else judge_alerts(r.alerts, r.now, t),
        "database": judge_database(r.database),
    }
    if r.idempotency is not None:
        sections["idempotency"] = judge_idempotency(r.idempotency)
    return Summary(worst([s.status for s in sections.values()]), sections)
