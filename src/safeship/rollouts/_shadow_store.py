"""The fleet's shadow comparisons in the database: running totals and the newest samples.

Each process's guard agent ships what its shadow runs added since its last tick (counters
and at most ``SHIP_SAMPLES`` new mismatch or candidate-error observations).  Totals are
one row per rollout, incremented in place (``INSERT ... ON CONFLICT DO UPDATE``), so the
table stays small however long a shadow phase runs; samples keep only the newest
``KEEP_SAMPLES`` per rollout.  Every stored string is capped and made storable here too,
since ``record`` is public and may be fed anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from safeship.rollouts._schema import rollout_shadow, rollout_shadow_samples
from safeship.rollouts._shadow import COUNTERS, SHIP_SAMPLES, bounded_repr, safe_text

__all__ = ["KEEP_SAMPLES", "ShadowSummary", "read", "record"]

KEEP_SAMPLES = 100
_TEXT_FIELDS = {"diff": 1000, "control": 1000, "candidate": 1000, "candidate_error": 1000,
                "context": 1000}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShadowSummary:
    """A rollout's shadow totals over the fleet and its newest samples (newest first)."""

    counts: dict[str, int]
    updated_at: datetime | None
    samples: list[dict[str, Any]]

    @property
    def comparisons(self) -> int:
        """Candidate results compared with legacy's and not ignored."""
        return self.counts["matches"] + self.counts["mismatches"]

    @property
    def mismatch_rate(self) -> float | None:
        compared = self.comparisons
        return self.counts["mismatches"] / compared if compared else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "comparisons": self.comparisons,
            "mismatch_rate": self.mismatch_rate,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
            "samples": self.samples,
        }


def _count(value: Any) -> int:
    try:
        number = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), 2**62)


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    return safe_text(value, limit) if isinstance(value, str) else bounded_repr(value, limit)


def _moment(value: Any, now: datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return now
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _millis(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sample_row(
    name: str, process: str, sample: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    row = {field: _text(sample.get(field), limit) for field, limit in _TEXT_FIELDS.items()}
    return {
        **row,
        "rollout": name,
        "process": safe_text(process, 200),
        "at": _moment(sample.get("at"), now),
        "kind": "error" if row["candidate_error"] is not None else "mismatch",
        "candidate_ms": _millis(sample.get("candidate_ms")),
    }


def _add_totals(conn: sa.Connection, name: str, counts: dict[str, int], now: datetime) -> None:
    table = rollout_shadow
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(table).values(rollout=name, updated_at=now, **counts)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.rollout],
            set_={"updated_at": now, **{k: table.c[k] + insert.excluded[k] for k in counts}},
        )
    )


def _trim(conn: sa.Connection, name: str, keep: int) -> None:
    table = rollout_shadow_samples
    oldest_kept = conn.execute(
        sa.select(table.c.id).where(table.c.rollout == name)
        .order_by(table.c.id.desc()).offset(keep - 1).limit(1)
    ).scalar()  # fmt: skip
    if oldest_kept is not None:
        conn.execute(sa.delete(table).where(table.c.rollout == name, table.c.id < oldest_kept))


def record(
    conn: sa.Connection,
    name: str,
    *,
    process: str,
    counts: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    now: datetime,
    keep: int = KEEP_SAMPLES,
) -> None:
    """Add one process's shadow counters to the rollout's totals and store its newest
    samples (at most ``SHIP_SAMPLES``), keeping the newest ``keep`` per rollout."""
    added = {k: _count(counts.get(k)) for k in COUNTERS}
    if any(added.values()):
        _add_totals(conn, name, added, now)
    rows = [_sample_row(name, process, s, now) for s in list(samples)[-SHIP_SAMPLES:]]
    if rows:
        conn.execute(sa.insert(rollout_shadow_samples), rows)
        _trim(conn, name, keep)


def read(conn: sa.Connection, name: str, *, samples: int = 20) -> ShadowSummary:
    """The rollout's totals (zeros when nothing was shipped) and newest ``samples``."""
    totals = conn.execute(
        sa.select(rollout_shadow).where(rollout_shadow.c.rollout == name)
    ).mappings().first()  # fmt: skip
    counts = {k: int(totals[k]) if totals else 0 for k in COUNTERS}
    table = rollout_shadow_samples
    rows = conn.execute(
        sa.select(table).where(table.c.rollout == name).order_by(table.c.id.desc()).limit(samples)
    ).mappings().all()  # fmt: skip
    kept = [
        {
            **{k: v for k, v in r.items() if k != "rollout"},
            "at": _moment(r["at"], r["at"]).isoformat(),
        }
        for r in rows
    ]
    updated = None if totals is None else _moment(totals["updated_at"], totals["updated_at"])
    return ShadowSummary(counts=counts, updated_at=updated, samples=kept)
