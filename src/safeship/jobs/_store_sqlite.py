"""The workers' SQLite store: the same states, tokens and outcomes as on PostgreSQL.

SQLite has one writer at a time, so each claim is a single ``UPDATE ... RETURNING`` (atomic
without row locks) and a capped queue's free slots are counted inside that statement; a
rate-limited queue's window is moved on and counted in the same transaction.
Every call runs on one thread of its own, so the event loop never waits on the file lock.
Time comes from ``clock`` (injectable for tests) and is stored as SQLAlchemy stores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from safeship.jobs._enqueue import sqlite_time
from safeship.jobs._store import Claimed, Decide, Expired, Outcome

__all__ = ["SqliteStore", "read_time"]

T = TypeVar("T")

_RETURNING = " RETURNING id, task, queue, args, attempts, max_attempts, crashes, token, created_at"
_CLAIM = (
    "UPDATE safeship_jobs SET state = 'running', token = token + 1, attempts = attempts + 1, "  # noqa: S608 - constant SQL
    "started_at = :now, lease_until = :until, worker = :worker, cancel_requested = 0 "
    "WHERE id IN (SELECT id FROM safeship_jobs WHERE state = 'pending' AND queue IN ({queues}) "
    "AND run_at <= :now ORDER BY priority DESC, run_at, id LIMIT {limit})" + _RETURNING
)
_ROOM = (
    "(SELECT CASE WHEN q.concurrency IS NULL THEN :n ELSE max(0, min(:n, q.concurrency - "
    "(SELECT count(*) FROM safeship_jobs WHERE queue = :q0 AND state = 'running'))) END "
    "FROM (SELECT (SELECT concurrency FROM safeship_jobs_queues WHERE queue = :q0) "
    "AS concurrency) q)"
)
_HISTORY = sa.text(
    "INSERT INTO safeship_jobs_history (id, task, queue, args, priority, attempts, max_attempts, "
    "crashes, unique_key, errors, progress, created_at, started_at, state, result, finished_at, "
    "expires_at) SELECT id, task, queue, args, priority, attempts - :give_back, max_attempts, "
    "crashes + :crash, unique_key, CASE WHEN :err IS NULL THEN errors ELSE "
    "json_insert(coalesce(errors, '[]'), '$[#]', json(:err)) END, progress, created_at, "
    "started_at, :state, :result, :now, :expires FROM safeship_jobs "
    "WHERE id = :id AND token = :token AND state = 'running' "
    "AND (:before IS NULL OR lease_until < :before)"
)
_DELETE = sa.text("DELETE FROM safeship_jobs WHERE id = :id AND token = :token")
_RETRY = sa.text(
    "UPDATE safeship_jobs SET state = :state, run_at = :run_at, token = token + 1, "
    "attempts = attempts - :give_back, crashes = crashes + :crash, lease_until = NULL, "
    "worker = NULL, errors = CASE WHEN :err IS NULL THEN errors ELSE "
    "json_insert(coalesce(errors, '[]'), '$[#]', json(:err)) END "
    "WHERE id = :id AND token = :token AND state = 'running' "
    "AND (:before IS NULL OR lease_until < :before)"
)
_EXPIRED = sa.text(
    "SELECT id, task, token, attempts, crashes FROM safeship_jobs "
    "WHERE state = 'running' AND lease_until < :now ORDER BY lease_until LIMIT :n"
)
_BEAT = sa.text(
    "UPDATE safeship_jobs SET lease_until = :until, progress = coalesce(:p, progress) "
    "WHERE id = :id AND token = :token AND state = 'running' RETURNING cancel_requested"
)
_PRUNE = sa.text(
    "DELETE FROM safeship_jobs_history WHERE id IN (SELECT id FROM safeship_jobs_history "
    "WHERE expires_at < :now LIMIT 5000)"
)
_SET_LIMIT = sa.text(
    "INSERT INTO safeship_jobs_queues (queue, concurrency, rate_limit, rate_period) "
    "VALUES (:q, :c, :r, :p) ON CONFLICT (queue) DO UPDATE SET "
    "concurrency = excluded.concurrency, rate_limit = excluded.rate_limit, "
    "rate_period = excluded.rate_period"
)
# Moves a rate-limited queue's window on (count back to 0) when a new one began; as the
# claim's first write it also takes the database's write lock, so claims take turns.
_WINDOW = sa.text(
    "UPDATE safeship_jobs_queues SET window_count = CASE WHEN window_start = :win "
    "THEN window_count ELSE 0 END, window_start = :win "
    "WHERE queue = :q0 AND rate_limit IS NOT NULL RETURNING rate_limit - window_count"
)
_COUNT_STARTS = sa.text(
    "UPDATE safeship_jobs_queues SET window_count = window_count + :n WHERE queue = :q0"
)


def read_time(value: Any) -> datetime:
    """A timestamp read back from SQLite (text, UTC) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _claimed(row: Any) -> Claimed:
    return Claimed(
        _uuid(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], read_time(row[8])
    )


class SqliteStore:
    """The worker store for an embedded SQLite database (a SQLAlchemy ``Engine``)."""

    def __init__(
        self, engine: sa.Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._woken = asyncio.Event()
        self._thread: ThreadPoolExecutor | None = None
        self._beat_conn: sa.Connection | None = None
        self._rates: dict[str, tuple[int, float]] = {}
        self._next_window = 0.0  # time.monotonic() a full rate window of ours opens again

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "store not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def open(self) -> None:
        self._woken = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="safeship-jobs-sqlite")

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, seconds: float) -> None:
        opens = self._next_window - time.monotonic()
        if opens > 0:  # a rate window was full: look again when the next one opens
            seconds = min(seconds, opens + 0.001)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    async def set_limits(
        self,
        limits: Mapping[str, int | None],
        rates: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        await self._run(self.set_limits_sync, limits, rates)

    def set_limits_sync(
        self,
        limits: Mapping[str, int | None],
        rates: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        self._rates = dict(rates or {})
        with self._engine.begin() as conn:
            for queue in {*limits, *self._rates}:
                count, period = self._rates.get(queue, (None, None))
                params = {"q": queue, "c": limits.get(queue), "r": count, "p": period}
                conn.execute(_SET_LIMIT, params)

    async def claim(
        self, queues: Sequence[str], limit: int, worker: str, lease: float
    ) -> list[Claimed]:
        self._woken.clear()
        return await self._run(self.claim_sync, queues, limit, worker, lease)

    def claim_sync(
        self, queues: Sequence[str], limit: int, worker: str, lease: float
    ) -> list[Claimed]:
        now = self._clock()
        params: dict[str, Any] = {
            "now": sqlite_time(now),
            "until": sqlite_time(now + timedelta(seconds=lease)),
            "worker": worker,
            "n": limit,
        }
        claimed: list[Claimed] = []
        with self._engine.begin() as conn:
            for queue in queues:  # one statement per queue: each counts its own free slots
                params["q0"] = queue
                params["n"] = limit - len(claimed)
                if params["n"] <= 0:
                    break
                rate = self._rates.get(queue)
                if rate is not None:
                    left = self._window(conn, queue, rate[1], now)
                    if left <= 0:
                        continue
                    params["n"] = min(params["n"], left)
                statement = _CLAIM.format(queues=":q0", limit=_ROOM)
                found = [_claimed(r) for r in conn.execute(sa.text(statement), params)]
                if rate is not None and found:
                    conn.execute(_COUNT_STARTS, {"q0": queue, "n": len(found)})
                claimed.extend(found)
        return claimed

    def _window(self, conn: sa.Connection, queue: str, period: float, now: datetime) -> int:
        """Starts left in ``queue``'s current rate window (moving it on if a new one began);
        when none are left, notes when the next window opens."""
        start = math.floor(now.timestamp() / period) * period
        win = datetime.fromtimestamp(start, UTC)
        left = conn.execute(_WINDOW, {"q0": queue, "win": sqlite_time(win)}).scalar()
        if left is None or left > 0:
            return 0 if left is None else int(left)
        opens = start + period - now.timestamp()
        self._next_window = time.monotonic() + max(0.0, opens)
        return 0

    async def finish(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
        return await self._run(self.finish_sync, outcomes)

    def finish_sync(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
        with self._engine.begin() as conn:
            return self._apply(conn, outcomes, None)

    def _apply(
        self, conn: sa.Connection, outcomes: Sequence[Outcome], before: str | None
    ) -> set[uuid.UUID]:
        """Record outcomes fenced by token (and, for a rescue, by a still expired lease)."""
        now = self._clock()
        done: set[uuid.UUID] = set()
        for o in outcomes:
            params = {
                "id": o.id.hex,
                "token": o.token,
                "state": o.state,
                "err": o.error,
                "give_back": 0 if o.counts else 1,
                "crash": 1 if o.crash else 0,
                "now": sqlite_time(now),
                "before": before,
            }
            if o.state in ("pending", "interrupted"):
                params["run_at"] = sqlite_time(now + timedelta(seconds=o.delay))
                if conn.execute(_RETRY, params).rowcount == 1:
                    done.add(o.id)
                continue
            params["result"] = o.result
            params["expires"] = (
                None if o.ttl is None else sqlite_time(now + timedelta(seconds=o.ttl))
            )
            if conn.execute(_HISTORY, params).rowcount == 1:
                conn.execute(_DELETE, params)
                done.add(o.id)
        return done

    async def rescue(self, decide: Decide, limit: int) -> list[Outcome]:
        return await self._run(self.rescue_sync, decide, limit)

    def rescue_sync(self, decide: Decide, limit: int) -> list[Outcome]:
        now = sqlite_time(self._clock())
        with self._engine.begin() as conn:
            rows = conn.execute(_EXPIRED, {"now": now, "n": limit})
            expired = [Expired(_uuid(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
            if not expired:
                return []
            outcomes = decide(expired)
            # A lease renewed since the read is left alone: its worker is alive after all.
            done = self._apply(conn, outcomes, now)
        return [o for o in outcomes if o.id in done]

    async def prune(self) -> int:
        return await self._run(self.prune_sync)

    def prune_sync(self) -> int:
        with self._engine.begin() as conn:
            return int(conn.execute(_PRUNE, {"now": sqlite_time(self._clock())}).rowcount)

    def beat(
        self,
        leases: Sequence[tuple[uuid.UUID, int]],
        lease: float,
        progress: Mapping[uuid.UUID, str],
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        if self._beat_conn is None:
            self._beat_conn = self._engine.connect()
        until = sqlite_time(self._clock() + timedelta(seconds=lease))
        ours: set[uuid.UUID] = set()
        cancel: set[uuid.UUID] = set()
        conn = self._beat_conn
        with conn.begin():
            for job, token in leases:
                params = {"until": until, "p": progress.get(job), "id": job.hex, "token": token}
                row = conn.execute(_BEAT, params).first()
                if row is not None:
                    ours.add(job)
                    if row[0]:
                        cancel.add(job)
        return ours, cancel

    def close_beat(self) -> None:
        if self._beat_conn is not None:
            self._beat_conn.close()
            self._beat_conn = None
