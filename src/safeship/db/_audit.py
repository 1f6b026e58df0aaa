"""The audit trail: every mutating control-plane call records who, when, what and why.

``record_audit`` takes the caller's connection so the record commits (or rolls back) in
the same transaction as the change it describes.  Its reason is stored through
``fit_text``: a text derived from an operator's reason (say ``"emergency: " + reason``)
always fits, so writing the audit record can never be what stops a safety action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

import sqlalchemy as sa

from safeship.db._schema import audit

MAX_REASON = 2000
"""Characters of ``reason`` the audit trail keeps: every API field that feeds it accepts
at most this many, and longer derived texts are cut with a marker by ``fit_text``."""

_CUT_MARKER = " [… {cut} more characters cut]"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@overload
def fit_text(text: str, limit: int = MAX_REASON) -> str: ...
@overload
def fit_text(text: None, limit: int = MAX_REASON) -> None: ...
@overload
def fit_text(text: str | None, limit: int = MAX_REASON) -> str | None: ...


def fit_text(text: str | None, limit: int = MAX_REASON) -> str | None:
    """``text`` as a database column of ``limit`` characters can hold it, whatever it is.

    NUL and lone surrogates (which PostgreSQL or UTF-8 refuse) become U+FFFD; a text
    longer than ``limit`` keeps its head and ends with a marker saying how many characters
    were cut, so the cut is visible and the text still fits.
    """
    if text is None:
        return None
    text = _UNSTORABLE.sub("\ufffd", text)
    if len(text) <= limit:
        return text
    keep = limit - len(_CUT_MARKER.format(cut=len(text)))
    if keep <= 0:  # a column too narrow for the marker: the head alone
        return text[:limit]
    return text[:keep] + _CUT_MARKER.format(cut=len(text) - keep)


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
    """Insert one audit record on ``conn`` (inside the caller's transaction); return its id.

    Texts are stored through ``fit_text`` (a too long reason is cut with a marker, never
    refused): the change being audited must not fail because of how it is described.
    """
    if not actor or not action or not target:
        raise ValueError("audit records need an actor, an action and a target")
    row = {
        "at": at or datetime.now(UTC),
        "actor": fit_text(actor, 200),
        "action": fit_text(action, 100),
        "target": fit_text(target, 300),
        "before": before,
        "after": after,
        "reason": fit_text(reason),
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
