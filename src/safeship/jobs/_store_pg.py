"""The workers' PostgreSQL store: asyncpg for claims and outcomes, LISTEN/NOTIFY wake-ups,
and a separate psycopg connection for the heartbeat thread.

Claims take a batch with ``FOR UPDATE SKIP LOCKED`` and bump each job's fencing token in
the same statement; every outcome (done, retry, dead, hand-back) matches on that token, so
an attempt whose lease was taken over changes nothing.  Queues with a fleet-wide
concurrency or rate limit are claimed under a row lock on their ``safeship_jobs_queues``
row, so two workers cannot both see the same free slot or the same unused starts of a
rate window (counted on the database's clock, in windows aligned to the period).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import make_url

from safeship.jobs import _sql_pg as sql
from safeship.jobs._store import Claimed, Decide, Expired, Outcome, limited

__all__ = ["PostgresStore", "plain_dsn"]

_CLAIM = sql.render(sql.CLAIM, "asyncpg", ("text[]", "int", "float8", "text"))
_CLAIM_ONE = sql.render(sql.CLAIM_ONE, "asyncpg", ("text", "int", "float8", "text"))
_FINISH = sql.render(sql.FINISH, "asyncpg", sql.FINISH_TYPES)
_RETRY = sql.render(sql.RETRY, "asyncpg", sql.RETRY_TYPES)
_HOLD = """
UPDATE safeship_jobs j SET state = 'interrupted', token = j.token + 1, crashes = j.crashes + 1,
       attempts = j.attempts - 1, lease_until = NULL, worker = NULL,
       errors = coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(u.err::jsonb)
FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS u(id, token, err)
WHERE j.id = u.id AND j.token = u.token AND j.state = 'running'
RETURNING j.id
"""


def plain_dsn(url: str) -> str:
    """A plain ``postgresql://`` DSN from a SQLAlchemy URL (any driver suffix)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _claimed(row: Any) -> Claimed:
    return Claimed(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


class PostgresStore:
    """One worker's connections: ``_main`` claims (and LISTENs), ``_write`` records
    outcomes, the heartbeat thread has its own psycopg connection."""

    def __init__(self, url: str, *, listen: bool = True) -> None:
        self._dsn = plain_dsn(url)
        self._listen = listen
        self._main: Any = None
        self._write: Any = None
        self._beat: Any = None
        self._limits: dict[str, int | None] = {}
        self._rates: dict[str, tuple[int, float]] = {}
        self._next_window = 0.0  # loop time a full rate window of ours opens again
        self._woken = asyncio.Event()
        self._writing = asyncio.Lock()

    async def open(self) -> None:
        import asyncpg

        self._main = await asyncpg.connect(self._dsn, timeout=5, command_timeout=5)
        self._write = await asyncpg.connect(self._dsn, timeout=5, command_timeout=5)
        if self._listen:
            await self._main.add_listener(sql.CHANNEL, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self._woken.set()

    def wake(self) -> None:
        self._woken.set()

    async def close(self) -> None:
        for conn in (self._main, self._write):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
                conn.terminate()
        self._main = self._write = None

    async def set_limits(
        self,
        limits: Mapping[str, int | None],
        rates: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        self._rates = dict(rates or {})
        self._limits = {q: limits.get(q) for q in {*limits, *self._rates}}
        for queue, concurrency in self._limits.items():
            count, period = self._rates.get(queue, (None, None))
            await self._main.execute(sql.SET_LIMIT, queue, concurrency, count, period)

    async def claim(
        self, queues: Sequence[str], limit: int, worker: str, lease: float
    ) -> list[Claimed]:
        self._woken.clear()
        free, capped = limited(
            {q: 1 if q in self._rates else c for q, c in self._limits.items()}, queues
        )
        rows: list[Claimed] = []
        if len(free) == 1:
            found = await self._main.fetch(_CLAIM_ONE, free[0], limit, lease, worker)
            rows.extend(_claimed(r) for r in found)
        elif free:
            found = await self._main.fetch(_CLAIM, free, limit, lease, worker)
            rows.extend(_claimed(r) for r in found)
        for queue in capped:
            if len(rows) >= limit:
                break
            rows.extend(await self._claim_capped(queue, limit - len(rows), worker, lease))
        return rows

    async def _claim_capped(
        self, queue: str, limit: int, worker: str, lease: float
    ) -> list[Claimed]:
        conn = self._main
        async with conn.transaction():
            room = limit
            if queue in self._rates:
                window = await conn.fetchrow(sql.WINDOW, queue)
                if window is None:
                    return []
                cap, left, wait = window
                room = min(room, left)
                if room <= 0:
                    loop = asyncio.get_running_loop()
                    self._next_window = loop.time() + max(0.0, wait)
                    return []
            else:
                cap = await conn.fetchval(sql.LOCK_QUEUE, queue)
            if cap is not None:
                running = await conn.fetchval(sql.RUNNING, queue)
                room = min(room, cap - running)
            if room <= 0:
                return []
            found = await conn.fetch(_CLAIM_ONE, queue, room, lease, worker)
            if queue in self._rates and found:
                await conn.execute(sql.COUNT_STARTS, queue, len(found))
        return [_claimed(r) for r in found]

    async def finish(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
        async with self._writing:
            return await _apply(self._write, outcomes)

    async def rescue(self, decide: Decide, limit: int) -> list[Outcome]:
        """Lock up to ``limit`` running jobs whose lease ran out and record what ``decide``
        makes of them, in one transaction: a heartbeat racing it waits on the row lock and
        then finds the token moved on, so its worker learns it lost the job."""
        async with self._writing, self._write.transaction():
            rows = await self._write.fetch(sql.EXPIRED, limit)
            if not rows:
                return []
            outcomes = decide([Expired(r[0], r[1], r[2], r[3], r[4]) for r in rows])
            held = [o for o in outcomes if o.state == "interrupted"]
            done = await _apply(self._write, [o for o in outcomes if o.state != "interrupted"])
            if held:
                ids, tokens = [o.id for o in held], [o.token for o in held]
                rows = await self._write.fetch(_HOLD, ids, tokens, [o.error for o in held])
                done |= {r[0] for r in rows}
        return [o for o in outcomes if o.id in done]

    async def prune(self) -> int:
        async with self._writing:
            status = await self._write.execute(sql.PRUNE)
        return int(status.split()[-1])

    async def wait(self, seconds: float) -> None:
        opens = self._next_window - asyncio.get_running_loop().time()
        if opens > 0:  # a rate window was full: look again when the next one opens
            seconds = min(seconds, opens + 0.001)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    def beat(
        self,
        leases: Sequence[tuple[uuid.UUID, int]],
        lease: float,
        progress: Mapping[uuid.UUID, str],
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        import psycopg

        if self._beat is None or self._beat.closed:
            self._beat = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
        ids = [job for job, _ in leases]
        try:
            rows = self._beat.execute(
                sql.BEAT, [lease, ids, [t for _, t in leases], [progress.get(j) for j in ids]]
            ).fetchall()
        except BaseException:
            self.close_beat()  # a failed beat's connection is not reused, and never left open
            raise
        return {r[0] for r in rows}, {r[0] for r in rows if r[1]}

    def close_beat(self) -> None:
        if self._beat is not None:
            self._beat.close()
            self._beat = None


async def _apply(conn: Any, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    """Record outcomes (fenced by token); the ids that were recorded.  One kind of outcome
    is one statement, atomic on its own (no BEGIN/COMMIT round trips); both kinds share a
    transaction."""
    final = [o for o in outcomes if o.state in ("succeeded", "cancelled", "dead")]
    again = [o for o in outcomes if o.state == "pending"]
    done: set[uuid.UUID] = set()
    if not again or not final:
        if final:
            rows = await conn.fetch(_FINISH, *_finish_columns(final))
        elif again:
            rows = await conn.fetch(_RETRY, *_retry_columns(again))
        else:
            rows = []
        return {r[0] for r in rows}
    async with conn.transaction():
        if final:
            rows = await conn.fetch(_FINISH, *_finish_columns(final))
            done |= {r[0] for r in rows}
        if again:
            rows = await conn.fetch(_RETRY, *_retry_columns(again))
            done |= {r[0] for r in rows}
    return done


def _finish_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    return [
        [o.id for o in outcomes],
        [o.token for o in outcomes],
        [o.state for o in outcomes],
        [o.result for o in outcomes],
        [o.error for o in outcomes],
        [o.counts for o in outcomes],
        [o.crash for o in outcomes],
        [o.ttl for o in outcomes],
    ]


def _retry_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    return [
        [o.id for o in outcomes],
        [o.token for o in outcomes],
        [o.state for o in outcomes],
        [o.delay for o in outcomes],
        [o.error for o in outcomes],
        [o.counts for o in outcomes],
        [o.crash for o in outcomes],
    ]
