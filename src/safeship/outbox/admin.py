"""Operating the outbox: stats, peek, retry and purge (SQLAlchemy Core, PostgreSQL and
SQLite).  Each function takes an ``Engine`` (it opens its own transaction) or a
``Connection`` (it runs in yours)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from safeship.errors import SafeshipError
from safeship.outbox import _schema as schema

__all__ = [
    "EventRow",
    "Filter",
    "OutboxStats",
    "PurgeMismatchError",
    "count",
    "peek",
    "purge",
    "retry",
    "stats",
]

Where = Literal["pending", "dead"]
T = TypeVar("T")
_LIVE = timedelta(seconds=30)


class PurgeMismatchError(SafeshipError, RuntimeError):
    """The rows a purge would delete are not the number the operator confirmed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Which events an operation touches; empty fields match everything."""

    ids: tuple[uuid.UUID, ...] = ()
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    type: str | None = None

    def apply(self, query: Any, table: sa.Table) -> Any:
        if self.ids:
            query = query.where(table.c.id.in_(self.ids))
        for name in ("aggregate_type", "aggregate_id", "type"):
            value = getattr(self, name)
            if value is not None:
                query = query.where(table.c[name.replace("_", "")] == value)
        return query

    @property
    def empty(self) -> bool:
        return not self.ids and self.aggregate_type is self.aggregate_id is self.type is None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    """A reading of the outbox's health."""

    pending: int
    retrying: int
    dead: int
    oldest_age_seconds: float
    relays: int
    leased_partitions: int
    published_total: int
    in_flight: int
    delivered_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    """One stored event as operators see it."""

    id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    type: str
    payload: Any
    headers: Any
    created_at: datetime
    attempts: int
    available_at: datetime | None
    last_error: str | None
    dead_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["id"] = str(self.id)
        for key in ("created_at", "available_at", "dead_at"):
            out[key] = None if out[key] is None else out[key].isoformat()
        return out


@contextmanager
def _connection(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    if isinstance(bind, sa.Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def _run(bind: sa.Engine | sa.Connection, fn: Callable[[sa.Connection], T]) -> T:
    with _connection(bind) as conn:
        return fn(conn)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def stats(bind: sa.Engine | sa.Connection) -> OutboxStats:
    """Pending, retrying and in-flight events, dead letters, the oldest pending event's
    age, live relays (a heartbeat in the last 30 s) and their summed delivery rate (each
    relay's events confirmed per second over its last ~10 s)."""
    return _run(bind, _stats)


def _stats(conn: sa.Connection) -> OutboxStats:
    t, now = schema.outbox, datetime.now(UTC)
    pending, retrying, oldest = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(t.c.attempts > 0),
            sa.func.min(t.c.created_at),
        )
    ).one()
    dead = conn.execute(sa.select(sa.func.count()).select_from(schema.dead)).scalar_one()
    r = schema.relays
    relays = conn.execute(
        sa.select(r.c.partitions, r.c.published, r.c.in_flight, r.c.delivered_per_second).where(
            r.c.heartbeat_at > now - _LIVE
        )
    ).all()
    oldest = _aware(oldest)
    return OutboxStats(
        pending=pending,
        retrying=retrying,
        dead=dead,
        oldest_age_seconds=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        relays=len(relays),
        leased_partitions=sum(len(row.partitions or []) for row in relays),
        published_total=sum(row.published or 0 for row in relays),
        in_flight=sum(row.in_flight or 0 for row in relays),
        delivered_per_second=round(sum(row.delivered_per_second or 0.0 for row in relays), 3),
    )


def peek(
    bind: sa.Engine | sa.Connection,
    *,
    where: Where = "pending",
    match: Filter | None = None,
    limit: int = 20,
) -> list[EventRow]:
    """The oldest ``limit`` (1..500) pending events or dead letters matching ``match``."""
    if not 1 <= limit <= 500:
        raise ValueError("peek limit must be between 1 and 500")
    table = schema.outbox if where == "pending" else _dead_table(where)
    query = (match or Filter()).apply(sa.select(*_as_text(table)), table)
    order = table.c.seq if where == "pending" else table.c.dead_at
    rows = _run(bind, lambda conn: conn.execute(query.order_by(order).limit(limit)).all())
    return [_event_row(row._mapping) for row in rows]


def count(
    bind: sa.Engine | sa.Connection, *, where: Where = "dead", match: Filter | None = None
) -> int:
    """How many pending events or dead letters match ``match``."""
    table = schema.outbox if where == "pending" else _dead_table(where)
    query = (match or Filter()).apply(sa.select(sa.func.count()).select_from(table), table)
    return int(_run(bind, lambda conn: conn.execute(query).scalar_one()))


def _dead_table(where: str) -> sa.Table:
    if where != "dead":
        raise ValueError("where must be 'pending' or 'dead'")
    return schema.dead


def _as_text(table: sa.Table) -> list[Any]:
    """The table's columns, JSON ones read as stored text (decoded by :func:`_lenient`)."""
    return [
        sa.cast(c, sa.Text()).label(c.name) if c.name in ("payload", "headers") else c
        for c in table.columns
    ]


def _lenient(text: Any) -> Any:
    """Stored JSON decoded; a row written by hand that is not JSON is shown as its text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _event_row(row: Any) -> EventRow:
    return EventRow(
        id=row["id"],
        aggregate_type=row["aggregatetype"],
        aggregate_id=row["aggregateid"],
        type=row["type"],
        payload=_lenient(row["payload"]),
        headers=_lenient(row["headers"]),
        created_at=_aware(row["created_at"]) or datetime.now(UTC),
        attempts=row["attempts"],
        available_at=_aware(row["available_at"]),
        last_error=row["last_error"],
        dead_at=_aware(row.get("dead_at")),
    )


_MOVED = ("id", "aggregatetype", "aggregateid", "type", "payload", "headers", "partition")


def retry(
    bind: sa.Engine | sa.Connection, *, match: Filter | None = None, everything: bool = False
) -> int:
    """Move matching dead letters back to the outbox (attempts reset, due now); return how
    many.  An empty filter needs ``everything=True``.  A retried event joins the end of its
    key's queue."""
    match = match or Filter()
    if match.empty and not everything:
        raise ValueError("retry needs ids or a filter, or everything=True for all dead letters")
    return _run(bind, lambda conn: _retry(conn, match))


def _retry(conn: sa.Connection, match: Filter) -> int:
    dead = schema.dead
    source = match.apply(
        sa.select(
            *(dead.c[name] for name in _MOVED),
            dead.c.created_at,
            sa.literal(0).label("attempts"),
            dead.c.last_error,
        ).order_by(dead.c.seq),
        dead,
    )
    names = [*_MOVED, "created_at", "attempts", "last_error"]
    ids = [row.id for row in conn.execute(match.apply(sa.select(dead.c.id), dead))]
    if not ids:
        return 0
    conn.execute(sa.insert(schema.outbox).from_select(names, source))
    conn.execute(sa.delete(dead).where(dead.c.id.in_(ids)))
    return len(ids)


def purge(
    bind: sa.Engine | sa.Connection,
    *,
    match: Filter | None = None,
    expected: int,
    where: Where = "dead",
) -> int:
    """Delete matching dead letters (or pending events), but only if exactly ``expected``
    rows match, the count the operator confirmed; otherwise raise and delete nothing."""
    table = schema.dead if where == "dead" else schema.outbox
    match = match or Filter()
    return _run(bind, lambda conn: _purge(conn, table, match, expected))


def _purge(conn: sa.Connection, table: sa.Table, match: Filter, expected: int) -> int:
    # Delete, then compare what was deleted: a row arriving between a count and the delete
    # can never be deleted unseen. A mismatch rolls the savepoint back (nothing deleted).
    with conn.begin_nested():
        deleted = int(conn.execute(match.apply(sa.delete(table), table)).rowcount)
        if deleted != expected:
            raise PurgeMismatchError(
                f"{deleted} events match, not the {expected} confirmed; look again and "
                f"confirm {deleted}"
            )
    return deleted


def ids_from_strings(values: Sequence[str]) -> tuple[uuid.UUID, ...]:
    """Parse event ids, with an error that names the bad one."""
    parsed = []
    for value in values:
        try:
            parsed.append(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"not an event id (UUID): {value!r}") from None
    return tuple(parsed)
