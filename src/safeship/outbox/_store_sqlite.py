"""The relay's SQLite store: one relay per database file (SQLite has no row or advisory
locks to share work with), run in a worker thread so the event loop never blocks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from safeship.outbox import _schema as schema
from safeship.outbox._model import Event
from safeship.outbox._schema import PARTITIONS
from safeship.outbox._store import Failure, event_from_row

__all__ = ["SqliteStore"]

_ALL = frozenset(range(PARTITIONS))
_T = schema.outbox
_CLAIM_COLUMNS = (
    _T.c.seq,
    _T.c.id,
    _T.c.aggregatetype,
    _T.c.aggregateid,
    _T.c.type,
    # As stored text: event_from_row decodes it, so one malformed row cannot fail the claim.
    sa.type_coerce(_T.c.payload, sa.Text()).label("payload"),
    sa.type_coerce(_T.c.headers, sa.Text()).label("headers"),
    _T.c.created_at,
    _T.c.attempts,
)


def _claim_query(
    limit: int, exclude: Sequence[int], now: datetime
) -> sa.Select[tuple[object, ...]]:
    earlier = _T.alias("b")
    blocked = (
        sa.select(sa.literal(1))
        .where(earlier.c.attempts > 0)
        .where(earlier.c.partition == _T.c.partition)
        .where(earlier.c.aggregateid == _T.c.aggregateid)
        .where(earlier.c.seq < _T.c.seq)
    )
    query = (
        sa.select(*_CLAIM_COLUMNS)
        .where(sa.or_(_T.c.available_at.is_(None), _T.c.available_at <= now))
        .where(~blocked.exists())
        .order_by(_T.c.seq)
        .limit(limit)
    )
    if exclude:
        query = query.where(_T.c.seq.not_in(list(exclude)))
    return query


class SqliteStore:
    """The relay store for an embedded SQLite database (a SQLAlchemy ``Engine``)."""

    def __init__(self, engine: sa.Engine, *, archive_seconds: float | None) -> None:
        self._engine = engine
        self._archive = archive_seconds
        self._woken = asyncio.Event()
        self.wants_more = False

    async def open(self) -> None:
        self._woken = asyncio.Event()

    async def close(self) -> None:
        return None

    def wake(self) -> None:
        self._woken.set()

    async def heartbeat(
        self,
        relay_id: str,
        busy: frozenset[int],
        published: int,
        in_flight: int = 0,
        rate: float = 0.0,
    ) -> frozenset[int]:
        await asyncio.to_thread(self._beat, relay_id, published, in_flight, rate)
        return _ALL

    def _beat(self, relay_id: str, published: int, in_flight: int, rate: float) -> None:
        now = datetime.now(UTC)
        r = schema.relays
        with self._engine.begin() as conn:
            started = conn.execute(
                sa.select(r.c.started_at).where(r.c.relay_id == relay_id)
            ).scalar_one_or_none()
            conn.execute(sa.delete(r).where(r.c.relay_id == relay_id))
            conn.execute(
                sa.insert(r).values(
                    relay_id=relay_id,
                    started_at=started or now,
                    heartbeat_at=now,
                    partitions=sorted(_ALL),
                    published=published,
                    in_flight=in_flight,
                    delivered_per_second=rate,
                )
            )
            if self._archive is not None:
                cutoff = now - timedelta(seconds=self._archive)
                conn.execute(
                    sa.delete(schema.archive).where(schema.archive.c.published_at < cutoff)
                )

    async def claim(
        self, partitions: frozenset[int], limit: int, exclude: Sequence[int]
    ) -> list[Event]:
        self._woken.clear()
        return await asyncio.to_thread(self._claim, limit, list(exclude))

    def _claim(self, limit: int, exclude: list[int]) -> list[Event]:
        with self._engine.connect() as conn:
            rows = conn.execute(_claim_query(limit, exclude, datetime.now(UTC))).all()
        return [event_from_row(row) for row in rows]

    async def complete(self, seqs: Sequence[int]) -> None:
        if seqs:
            await asyncio.to_thread(self._complete, list(seqs))

    def _complete(self, seqs: list[int]) -> None:
        with self._engine.begin() as conn:
            if self._archive is not None:
                _copy(conn, schema.archive, seqs, published_at=datetime.now(UTC))
            conn.execute(sa.delete(_T).where(_T.c.seq.in_(seqs)))

    async def fail(self, failures: Sequence[Failure]) -> None:
        if failures:
            await asyncio.to_thread(self._fail, list(failures))

    def _fail(self, failures: list[Failure]) -> None:
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            for failure in failures:
                if failure.delay is not None:
                    conn.execute(
                        sa.update(_T)
                        .where(_T.c.seq == failure.seq)
                        .values(
                            attempts=_T.c.attempts + 1,
                            last_error=failure.error,
                            available_at=now + timedelta(seconds=failure.delay),
                        )
                    )
                    continue
                conn.execute(
                    sa.update(_T)
                    .where(_T.c.seq == failure.seq)
                    .values(attempts=_T.c.attempts + 1, last_error=failure.error)
                )
                _copy(conn, schema.dead, [failure.seq], dead_at=now)
                conn.execute(sa.delete(_T).where(_T.c.seq == failure.seq))

    async def pending(self) -> int:
        """Events in the outbox table (for the outage log line)."""
        return await asyncio.to_thread(self._pending)

    def _pending(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one())

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)


def _copy(conn: sa.Connection, target: sa.Table, seqs: list[int], **extra: datetime) -> None:
    names = [c.name for c in _T.columns]
    columns = [
        *[_T.c[n] for n in names],
        *[sa.literal(v, sa.DateTime(timezone=True)) for v in extra.values()],
    ]
    select = sa.select(*columns).where(_T.c.seq.in_(seqs))
    conn.execute(sa.insert(target).from_select([*names, *extra], select))
