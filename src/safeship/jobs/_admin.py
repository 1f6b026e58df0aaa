"""Status by id, cancellation, dead letters (list, peek, retry, purge) and queue stats.

Each function takes a SQLAlchemy ``Engine`` (one transaction of its own) or ``Connection``
(the caller's transaction).  The dead-letter verbs are the outbox's: list, peek, retry,
purge.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from safeship.jobs import _schema as schema
from safeship.jobs._model import JobState, JobStatus, PurgeMismatchError, UnknownJobError
from safeship.jobs._store_sqlite import read_time

__all__ = [
    "PurgeMismatchError",
    "QueueStats",
    "cancel",
    "count_dead",
    "dead_letters",
    "purge_dead",
    "retry_dead",
    "stats",
    "status",
]


_J = schema.jobs
_H = schema.history
Bind = sa.Engine | sa.Connection
_MAX_LIST = 1000


@contextmanager
def _conn(bind: Bind) -> Iterator[sa.Connection]:
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            yield conn
    else:
        yield bind


def _json(value: Any) -> Any:
    return value  # the JSON column type has decoded it already


def _time(value: Any) -> datetime | None:
    return None if value is None else read_time(value)


def _status(row: Any, hot: bool) -> JobStatus:
    m = row._mapping
    return JobStatus(
        id=uuid.UUID(str(m["id"])),
        task=m["task"],
        queue=m["queue"],
        state=JobState(m["state"]),
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        crashes=m["crashes"],
        priority=m["priority"],
        args=_json(m["args"]),
        progress=_json(m["progress"]),
        result=None if hot else _json(m["result"]),
        errors=_json(m["errors"]) or [],
        created_at=read_time(m["created_at"]),
        run_at=_time(m["run_at"]) if hot else None,
        started_at=_time(m["started_at"]),
        finished_at=None if hot else _time(m["finished_at"]),
        cancel_requested=bool(m["cancel_requested"]) if hot else False,
    )


def status(bind: Bind, job_id: uuid.UUID | str) -> JobStatus:
    """The job's state, attempts, progress, result or errors; :class:`UnknownJobError` if none."""
    job = uuid.UUID(str(job_id))
    with _conn(bind) as conn:
        row = conn.execute(sa.select(_J).where(_J.c.id == job)).first()
        if row is not None:
            return _status(row, True)
        row = conn.execute(sa.select(_H).where(_H.c.id == job)).first()
        if row is not None:
            return _status(row, False)
    raise UnknownJobError(f"no job {job}")


def _now(conn: sa.Connection) -> Any:
    return datetime.now(UTC)


def _to_history(conn: sa.Connection, where: Any, state: str, ttl: float | None) -> int:
    """Move hot rows matching ``where`` to history as ``state``."""
    now = datetime.now(UTC)
    from datetime import timedelta

    expires = None if ttl is None else now + timedelta(seconds=ttl)
    columns = [
        c.name for c in _H.columns if c.name not in ("state", "result", "finished_at", "expires_at")
    ]
    select = sa.select(
        *[_J.c[name] for name in columns],
        sa.literal(state).label("state"),
        sa.null().label("result"),
        sa.literal(now, sa.DateTime(timezone=True)).label("finished_at"),
        sa.literal(expires, sa.DateTime(timezone=True)).label("expires_at"),
    ).where(where)
    moved = conn.execute(
        _H.insert().from_select([*columns, "state", "result", "finished_at", "expires_at"], select)
    ).rowcount
    conn.execute(_J.delete().where(where))
    return int(moved)


def cancel(bind: Bind, job_id: uuid.UUID | str) -> JobState:
    """Cancel a job: a pending or interrupted one is cancelled at once; a running one is
    asked to stop (its handler sees ``ctx.cancelled``); the state it is now in."""
    job = uuid.UUID(str(job_id))
    with _conn(bind) as conn:
        row = conn.execute(sa.select(_J.c.state).where(_J.c.id == job).with_for_update()).first()
        if row is None:
            return status(conn, job).state
        if row[0] == JobState.RUNNING:
            conn.execute(_J.update().where(_J.c.id == job).values(cancel_requested=True))
            return JobState.RUNNING
        _to_history(
            conn,
            sa.and_(_J.c.id == job, _J.c.state != JobState.RUNNING.value),
            "cancelled",
            86400.0,
        )
        return JobState.CANCELLED


def dead_letters(bind: Bind, *, task: str | None = None, limit: int = 100) -> list[JobStatus]:
    """Dead jobs, newest first, with their error history."""
    if not 1 <= limit <= _MAX_LIST:
        raise ValueError(f"limit must be in [1, {_MAX_LIST}], got {limit!r}")
    query = sa.select(_H).where(_H.c.state == JobState.DEAD.value)
    if task is not None:
        query = query.where(_H.c.task == task)
    with _conn(bind) as conn:
        rows = conn.execute(query.order_by(_H.c.finished_at.desc()).limit(limit)).all()
    return [_status(row, False) for row in rows]


def interrupted(bind: Bind, *, limit: int = 100) -> list[JobStatus]:
    """Jobs held after their worker died (orphan policy ``hold``)."""
    query = sa.select(_J).where(_J.c.state == JobState.INTERRUPTED.value).limit(limit)
    with _conn(bind) as conn:
        return [_status(row, True) for row in conn.execute(query)]


def _filter(ids: list[uuid.UUID] | None, task: str | None) -> Any:
    clauses: list[sa.ColumnElement[bool]] = []
    if ids is not None:
        clauses.append(_H.c.id.in_(ids))
    if task is not None:
        clauses.append(_H.c.task == task)
    return sa.and_(_H.c.state == JobState.DEAD.value, *clauses)


def retry_dead(bind: Bind, *, ids: list[uuid.UUID] | None = None, task: str | None = None) -> int:
    """Put dead jobs (all, these ids, or this task's) back to pending with fresh attempts;
    interrupted jobs with those ids are released too.  How many went back."""
    with _conn(bind) as conn:
        where = _filter(ids, task)
        rows = conn.execute(sa.select(_H).where(where)).all()
        now = _now(conn)
        for row in rows:
            m = row._mapping
            values = {
                c.name: m[c.name] for c in _J.columns if c.name in m and c.name not in ("state",)
            }
            values.update(
                state="pending", attempts=0, crashes=0, run_at=now, token=0, cancel_requested=False
            )
            conn.execute(_J.insert().values(**{k: v for k, v in values.items() if k in _J.c}))
        conn.execute(_H.delete().where(where))
        released = 0
        if ids is not None:
            released = conn.execute(
                _J.update()
                .where(_J.c.id.in_(ids), _J.c.state == JobState.INTERRUPTED.value)
                .values(state="pending", run_at=now, token=_J.c.token + 1, crashes=0)
            ).rowcount
        return len(rows) + int(released)


def count_dead(bind: Bind, *, ids: list[uuid.UUID] | None = None, task: str | None = None) -> int:
    """How many dead jobs match (all, these ids, or this task's): what a purge would delete."""
    with _conn(bind) as conn:
        query = sa.select(sa.func.count()).select_from(_H).where(_filter(ids, task))
        return int(conn.execute(query).scalar_one())


def purge_dead(
    bind: Bind,
    *,
    ids: list[uuid.UUID] | None = None,
    task: str | None = None,
    expected: int | None = None,
) -> int:
    """Delete dead jobs (all, these ids, or this task's); how many.

    With ``expected`` (the number the operator saw and confirmed), the purge deletes only
    if exactly that many match: otherwise it raises :class:`PurgeMismatchError` and
    deletes nothing (the delete runs in a savepoint and is rolled back), so a dead letter
    that arrived after the operator looked is never deleted unseen."""
    if expected is not None and (
        isinstance(expected, bool) or not isinstance(expected, int) or expected < 0
    ):
        raise ValueError(f"expected must be a count >= 0, got {expected!r}")
    with _conn(bind) as conn, conn.begin_nested() as savepoint:
        deleted = int(conn.execute(_H.delete().where(_filter(ids, task))).rowcount)
        if expected is not None and deleted != expected:
            savepoint.rollback()
            raise PurgeMismatchError(
                f"{deleted} dead letters match, not the {expected} confirmed; "
                f"look again and confirm {deleted}"
            )
        return deleted


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue right now: jobs by state and the age of its oldest runnable job (s)."""

    queue: str
    pending: int
    running: int
    interrupted: int
    dead: int
    oldest_pending_seconds: float | None


def stats(bind: Bind) -> list[QueueStats]:
    """Per queue: pending, running, interrupted, dead and the oldest pending job's age."""
    with _conn(bind) as conn:
        hot = conn.execute(
            sa.select(_J.c.queue, _J.c.state, sa.func.count(), sa.func.min(_J.c.run_at)).group_by(
                _J.c.queue, _J.c.state
            )
        ).all()
        dead = conn.execute(
            sa.select(_H.c.queue, sa.func.count()).where(_H.c.state == "dead").group_by(_H.c.queue)
        ).all()
    now = datetime.now(UTC)
    found: dict[str, dict[str, Any]] = {}
    for queue, state, count, oldest in hot:
        entry = found.setdefault(queue, {"dead": 0, "oldest": None})
        entry[state] = count
        if state == "pending" and oldest is not None:
            entry["oldest"] = max(0.0, (now - read_time(oldest)).total_seconds())
    for queue, count in dead:
        found.setdefault(queue, {"dead": 0, "oldest": None})["dead"] = count
    return [
        QueueStats(
            q,
            e.get("pending", 0),
            e.get("running", 0),
            e.get("interrupted", 0),
            e["dead"],
            e["oldest"],
        )
        for q, e in sorted(found.items())
    ]
