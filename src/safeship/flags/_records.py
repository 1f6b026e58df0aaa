"""Stored flags as values: ``FlagRecord`` and how a row of ``safeship_flags`` becomes one.

Reading is lenient: a definition stored in an unexpected shape (written around the store's
checks) reads as a flag that is off, so one bad row never breaks a list of every flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from safeship.flags import _authoring as authoring


@dataclass(frozen=True, slots=True)
class FlagRecord:
    """A stored flag: its Unleash definition plus safeship's metadata."""

    name: str
    definition: dict[str, Any]
    description: str | None
    owner: str | None
    safe_value: bool
    lifetime_days: int | None
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    last_evaluated_at: datetime | None

    @property
    def enabled(self) -> bool:
        return bool(self.definition.get("enabled"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "rollout_percent": authoring.rollout_percent(self.definition),
            "summary": authoring.summary(self.definition),
            "definition": self.definition,
            "description": self.description,
            "owner": self.owner,
            "safe_value": self.safe_value,
            "lifetime_days": self.lifetime_days,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
            "last_evaluated_at": _iso(self.last_evaluated_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite drops the zone; values are UTC
        return moment.replace(tzinfo=UTC)
    return moment


def stored_definition(raw: object, name: str) -> dict[str, Any]:
    """A stored definition as a dict; one that is not an object reads as a flag that is off."""
    return dict(raw) if isinstance(raw, Mapping) else {"name": name, "enabled": False}


def copy_json(raw: object) -> Any:
    return dict(raw) if isinstance(raw, Mapping) else raw


def stored_enabled(raw: object) -> bool:
    return isinstance(raw, Mapping) and raw.get("enabled") is True


def record_from_row(row: sa.RowMapping) -> FlagRecord:
    return FlagRecord(
        name=row["name"],
        definition=stored_definition(row["definition"], row["name"]),
        description=row["description"],
        owner=row["owner"],
        safe_value=bool(row["safe_value"]),
        lifetime_days=row["lifetime_days"],
        version=int(row["version"]),
        created_at=aware(row["created_at"]) or datetime.now(UTC),
        updated_at=aware(row["updated_at"]) or datetime.now(UTC),
        updated_by=row["updated_by"],
        last_evaluated_at=aware(row["last_evaluated_at"]),
    )


def stale_reasons(record: FlagRecord, now: datetime, settled_days: int) -> list[str]:
    reasons = []
    settled_for = now - record.updated_at
    percent = authoring.rollout_percent(record.definition) if record.enabled else 0.0
    if percent in (0.0, 100.0) and settled_for >= timedelta(days=settled_days):
        state = "on for everyone" if record.enabled and percent == 100.0 else "off"
        reasons.append(f"{state} for {settled_for.days} days")
    if record.last_evaluated_at is None and settled_for >= timedelta(days=1):
        reasons.append("never evaluated")
    if record.lifetime_days is not None and now - record.created_at > timedelta(
        days=record.lifetime_days
    ):
        reasons.append(f"past its expected lifetime of {record.lifetime_days} days")
    return reasons
