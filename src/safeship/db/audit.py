"""The audit trail: every mutating control-plane call records who, when, what and why.

``record_audit`` takes the caller's connection so the record commits (or rolls back) in
the same transaction as the change it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from safeship.db.schema import audit

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited change."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


def record_audit(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> int:
    """Insert one audit record on ``conn`` (inside the caller's transaction); return its id."""
    if not actor or not action or not target:
        raise ValueError("audit records need an actor, an action and a target")
    if reason is not None and len(reason) > MAX_REASON:
        raise ValueError(f"reason is {len(reason)} characters; at most {MAX_REASON} allowed")
    row = {
        "at": at or datetime.now(UTC),
        "actor": actor[:200],
        "action": action[:100],
        "target": target[:300],
        "before": before,
        "after": after,
        "reason": reason,
    }
    result = conn.execute(sa.insert(audit).values(**row).returning(audit.c.id))
    return int(result.scalar_one())


def list_audit(
    conn: sa.Connection,
    *,
    limit: int = 50,
    before_id: int | None = None,
    target: str | None = None,
) -> list[AuditRecord]:
    """Newest first; page with ``before_id`` (the last id of the previous page)."""
    if not 1 <= limit <= 500:
        raise ValueError(f"limit must be between 1 and 500, got {limit}")
    query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit.c.id < before_id)
    if target is not None:
        query = query.where(audit.c.target == target)
    return [_to_record(row) for row in conn.execute(query).mappings()]


def _to_record(row: sa.RowMapping) -> AuditRecord:
    at: datetime = row["at"]
    if at.tzinfo is None:  # SQLite returns naive datetimes; they were written in UTC
        at = at.replace(tzinfo=UTC)
    return AuditRecord(
        id=row["id"],
        at=at,
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        before=row["before"],
        after=row["after"],
        reason=row["reason"],
    )
