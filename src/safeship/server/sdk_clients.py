"""The SDK instances that announced themselves (``POST /api/client/register``) or reported
counts (``POST /api/client/metrics``), kept in ``safeship_sdk_clients`` (migration
``0011_sdk_clients``), so every control-plane replica and restart sees the same list.

One row per ``(app name, instance id)``: a registration replaces what the instance said
about itself; a report moves ``last_seen_at`` and adds to ``evaluations``. Both are a single
statement (no read-modify-write), so concurrent reports never lose a count.

A report's per-flag counts (yes, no and each variant) are added, in the same transaction,
to one-minute buckets of ``safeship_samples`` (kind ``sdk``, the flag as subject), which
the flag's dashboard page charts; the sampler's retention prunes them with the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from safeship.db._schema import metadata
from safeship.server._samples import bucket_of, samples

sdk_clients = sa.Table(
    "safeship_sdk_clients",
    metadata,
    sa.Column("app_name", sa.String(200), primary_key=True),
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("sdk_version", sa.String(200), nullable=True),
    sa.Column("environment", sa.String(200), nullable=True),
    sa.Column("strategies", sa.JSON(), nullable=False),
    sa.Column("started", sa.String(100), nullable=True),
    sa.Column("interval_ms", sa.BigInteger(), nullable=True),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("evaluations", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Index("ix_safeship_sdk_clients_last_seen", "last_seen_at"),
)
#: Rows `SdkClientStore.newest` returns at most.
MAX_LISTED = 1000
#: Seconds per bucket of SDK-reported evaluations (Unleash SDKs report every 60 s).
EVALUATION_BUCKET = 60.0
#: Variants charted per flag and report (the rest are counted in yes/no only).
MAX_VARIANTS = 20


class Counted(Protocol):
    """One flag's counts in a report: ``yes``, ``no`` and per-variant."""

    @property
    def yes(self) -> int: ...
    @property
    def no(self) -> int: ...
    @property
    def variants(self) -> Mapping[str, int]: ...


def evaluation_rows(counts: Mapping[str, Counted], now: datetime) -> list[dict[str, Any]]:
    """The sample rows one report adds to: metric ``yes``, ``no`` or ``variant:<name>``."""
    bucket = bucket_of(now.timestamp(), EVALUATION_BUCKET)
    rows: list[dict[str, Any]] = []
    for name, counted in sorted(counts.items()):
        figures = {"yes": counted.yes, "no": counted.no}
        for variant, n in sorted(counted.variants.items())[:MAX_VARIANTS]:
            figures[f"variant:{variant}"[:40]] = n
        rows += [
            {"kind": "sdk", "subject": name[:400], "metric": metric, "bucket": bucket,
             "value": float(n)}
            for metric, n in figures.items() if n > 0
        ]  # fmt: skip
    return rows


def _add_evaluations(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Add each row's value to its bucket (one upsert: concurrent replicas lose nothing)."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(samples).values(rows)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["kind", "subject", "metric", "bucket"],
                set_={"value": samples.c.value + stmt.excluded.value},
            )
        )
        return
    for row in rows:  # other databases: update, else insert
        key = [samples.c[k] == row[k] for k in ("kind", "subject", "metric", "bucket")]
        add = sa.update(samples).where(*key).values(value=samples.c.value + row["value"])
        if not conn.execute(add).rowcount:
            conn.execute(sa.insert(samples).values(**row))


@dataclass(frozen=True, slots=True)
class Registration:
    app_name: str
    instance_id: str
    sdk_version: str | None
    environment: str | None
    strategies: tuple[str, ...]
    started: str | None
    interval_ms: int | None


class SdkClientStore:
    """Reads and writes ``safeship_sdk_clients`` on ``engine``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def register(self, registration: Registration, *, now: datetime | None = None) -> None:
        """Insert the instance, or replace what it said about itself (counts are kept)."""
        now = now or datetime.now(UTC)
        described = {
            "sdk_version": registration.sdk_version,
            "environment": registration.environment,
            "strategies": list(registration.strategies),
            "started": registration.started,
            "interval_ms": registration.interval_ms,
            "last_seen_at": now,
        }
        key = {"app_name": registration.app_name, "instance_id": registration.instance_id}
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(sdk_clients)
                .where(*(sdk_clients.c[k] == v for k, v in key.items()))
                .values(**described)
            ).rowcount
            if not updated and not self._insert(conn, {**key, **described, "registered_at": now}):
                conn.execute(  # inserted concurrently since the update: update it now
                    sa.update(sdk_clients)
                    .where(*(sdk_clients.c[k] == v for k, v in key.items()))
                    .values(**described)
                )

    def reported(
        self,
        app_name: str,
        instance_id: str,
        evaluations: int,
        *,
        counts: Mapping[str, Counted] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Add ``evaluations`` to the instance's count (a row is made if it never registered)
        and ``counts`` (known flags only) to this minute's evaluation buckets."""
        now = now or datetime.now(UTC)
        rows = evaluation_rows(counts, now) if counts else []
        where = (sdk_clients.c.app_name == app_name, sdk_clients.c.instance_id == instance_id)
        add = (
            sa.update(sdk_clients)
            .where(*where)
            .values(last_seen_at=now, evaluations=sdk_clients.c.evaluations + evaluations)
        )
        with self.engine.begin() as conn:
            if not conn.execute(add).rowcount:
                row = {
                    "app_name": app_name,
                    "instance_id": instance_id,
                    "strategies": [],
                    "registered_at": now,
                    "last_seen_at": now,
                    "evaluations": evaluations,
                }
                if not self._insert(conn, row):
                    conn.execute(add)  # inserted concurrently: add to that row
            if rows:
                _add_evaluations(conn, rows)

    @staticmethod
    def _insert(conn: sa.Connection, row: dict[str, Any]) -> bool:
        """Insert ``row`` in a savepoint; False when a concurrent insert got there first."""
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(sdk_clients).values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def newest(self, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
        """The instances seen most recently first."""
        query = sa.select(sdk_clients).order_by(sdk_clients.c.last_seen_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
