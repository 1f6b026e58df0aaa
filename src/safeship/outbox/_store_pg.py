"""The relay's PostgreSQL store (asyncpg): partition leases as advisory locks, claims,
deletes or archives, reschedules and dead letters, LISTEN/NOTIFY wake-ups.

Partition ownership is a session advisory lock held by the relay's connection: PostgreSQL
frees it the moment that connection ends (relay killed, backend terminated), and no two
relays can hold it at once.  A heartbeat row per relay tells the others how many relays are
alive, so each takes a fair share; a dead relay's row stops counting after ``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import make_url

from safeship.outbox._model import Event
from safeship.outbox._schema import PARTITIONS
from safeship.outbox._store import Failure, event_from_row

__all__ = ["PostgresStore", "asyncpg_dsn"]

LOCK_CLASS = 0x5AFE0B  # first key of pg_try_advisory_lock(int, int); second is the partition
CHANNEL = "safeship_outbox"

_CLAIM = """
SELECT o.seq, o.id, o.aggregatetype, o.aggregateid, o.type, o.payload::text, o.headers::text,
       o.created_at, o.attempts
FROM safeship_outbox o
WHERE o.partition = ANY($1::smallint[])
  AND (o.available_at IS NULL OR o.available_at <= now())
  AND o.seq <> ALL($2::bigint[])
  AND NOT EXISTS (
    SELECT 1 FROM safeship_outbox b
    WHERE b.attempts > 0 AND b.partition = o.partition AND b.aggregateid = o.aggregateid
      AND b.seq < o.seq)
ORDER BY o.seq
LIMIT $3
"""
_DELETE = "DELETE FROM safeship_outbox WHERE seq = ANY($1::bigint[])"
_ARCHIVE = """
WITH d AS (DELETE FROM safeship_outbox WHERE seq = ANY($1::bigint[]) RETURNING *)
INSERT INTO safeship_outbox_archive (seq, id, aggregatetype, aggregateid, type, payload,
       headers, partition, created_at,
       attempts, available_at, last_error, published_at)
SELECT seq, id, aggregatetype, aggregateid, type, payload, headers, partition, created_at,
       attempts, available_at, last_error, now() FROM d ON CONFLICT (id) DO NOTHING
"""
_RESCHEDULE = """
UPDATE safeship_outbox AS o
SET attempts = o.attempts + 1, last_error = u.err,
    available_at = now() + make_interval(secs => u.delay)
FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS u(seq, delay, err)
WHERE o.seq = u.seq
"""
_BURY = """
WITH d AS (
  DELETE FROM safeship_outbox o USING unnest($1::bigint[], $2::text[]) AS u(seq, err)
  WHERE o.seq = u.seq RETURNING o.*, u.err)
INSERT INTO safeship_outbox_dead (seq, id, aggregatetype, aggregateid, type, payload,
       headers, partition, created_at,
       attempts, available_at, last_error, dead_at)
SELECT seq, id, aggregatetype, aggregateid, type, payload, headers, partition, created_at,
       attempts + 1, available_at, err, now() FROM d ON CONFLICT (id) DO NOTHING
"""
_BEAT = """
INSERT INTO safeship_outbox_relays
       (relay_id, started_at, heartbeat_at, partitions, published, in_flight,
        delivered_per_second)
VALUES ($1, now(), now(), $2::jsonb, $3, $4, $5)
ON CONFLICT (relay_id) DO UPDATE
SET heartbeat_at = now(), partitions = EXCLUDED.partitions, published = EXCLUDED.published,
    in_flight = EXCLUDED.in_flight, delivered_per_second = EXCLUDED.delivered_per_second
"""
_LIVE = """
SELECT count(*) FROM safeship_outbox_relays
WHERE heartbeat_at > now() - make_interval(secs => $1)
"""
_FORGET = "DELETE FROM safeship_outbox_relays WHERE heartbeat_at < now() - interval '1 hour'"
_PRUNE_ARCHIVE = """
DELETE FROM safeship_outbox_archive WHERE published_at < now() - make_interval(secs => $1)
"""


def asyncpg_dsn(url: str) -> str:
    """A plain ``postgresql://`` DSN from a SQLAlchemy URL (any driver suffix)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresStore:
    """One relay's connection pair: ``_main`` holds the leases and claims, ``_write``
    records outcomes, so completing one batch overlaps claiming the next."""

    def __init__(
        self, dsn: str, *, lease_ttl: float, archive_seconds: float | None, listen: bool = True
    ) -> None:
        self._dsn = dsn
        self._ttl = lease_ttl
        self._archive = archive_seconds
        self._listen = listen
        self._main: Any = None
        self._write: Any = None
        self._held: set[int] = set()
        self._draining: set[int] = set()
        self._woken = asyncio.Event()
        self._writing = asyncio.Lock()  # one statement at a time on the write connection
        self.wants_more = False

    async def open(self) -> None:
        import asyncpg

        timeout = max(1.0, self._ttl)
        self._main = await asyncpg.connect(self._dsn, timeout=timeout, statement_cache_size=64)
        self._write = await asyncpg.connect(self._dsn, timeout=timeout)
        self._held.clear()
        self._draining.clear()
        if self._listen:
            await self._main.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self._woken.set()

    def wake(self) -> None:
        self._woken.set()

    async def close(self) -> None:
        self._held.clear()
        self._draining.clear()
        for conn in (self._main, self._write):
            if conn is not None:
                conn.terminate()
        self._main = self._write = None

    async def heartbeat(
        self,
        relay_id: str,
        busy: frozenset[int],
        published: int,
        in_flight: int = 0,
        rate: float = 0.0,
    ) -> frozenset[int]:
        """Renew this relay's row, then take or give back partitions toward a fair share.

        A partition to give back first stops being claimed ("draining"), and is unlocked
        once none of its events is in flight, so its next owner cannot overtake them."""
        conn = self._main
        await conn.execute(_BEAT, relay_id, _json_list(self._held), published, in_flight, rate)
        live = max(1, await conn.fetchval(_LIVE, self._ttl))
        share = math.ceil(PARTITIONS / live)
        excess = len(self._held) - share - len(self._draining)
        if excess > 0:
            candidates = sorted(self._held - self._draining, key=lambda p: (p in busy, -p))
            self._draining.update(candidates[:excess])
        for partition in sorted(self._draining - busy):
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, partition)
            self._held.discard(partition)
            self._draining.discard(partition)
        await self._acquire(share - len(self._held), relay_id)
        short = len(self._held) < share - (live * share - PARTITIONS)
        self.wants_more = short or bool(self._draining)
        if self._archive is not None:
            async with self._writing:
                await self._write.execute(_PRUNE_ARCHIVE, self._archive)
        await conn.execute(_FORGET)
        return frozenset(self._held - self._draining)

    async def _acquire(self, count: int, relay_id: str) -> None:
        if count <= 0:
            return
        start = zlib.crc32(relay_id.encode()) % PARTITIONS
        order = [(start + i) % PARTITIONS for i in range(PARTITIONS)]
        for partition in order:
            if count <= 0:
                return
            if partition in self._held:
                continue
            got = await self._main.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, partition
            )
            if got:
                self._held.add(partition)
                count -= 1

    async def claim(
        self, partitions: frozenset[int], limit: int, exclude: Sequence[int]
    ) -> list[Event]:
        if not partitions:
            return []
        self._woken.clear()
        rows = await self._main.fetch(_CLAIM, list(partitions), list(exclude), limit)
        return [event_from_row(row) for row in rows]

    async def complete(self, seqs: Sequence[int]) -> None:
        if seqs:
            async with self._writing:
                statement = _DELETE if self._archive is None else _ARCHIVE
                await self._write.execute(statement, list(seqs))

    async def fail(self, failures: Sequence[Failure]) -> None:
        later = [f for f in failures if f.delay is not None]
        dead = [f for f in failures if f.delay is None]
        async with self._writing:
            if later:
                await self._write.execute(
                    _RESCHEDULE,
                    [f.seq for f in later],
                    [f.delay for f in later],
                    [f.error for f in later],
                )
            if dead:
                await self._write.execute(_BURY, [f.seq for f in dead], [f.error for f in dead])

    async def pending(self) -> int:
        """Events in the outbox table (for the outage log line), on the write connection,
        since the main one may be claiming at the same time."""
        async with self._writing:
            return int(await self._write.fetchval("SELECT count(*) FROM safeship_outbox"))

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)


def _json_list(values: set[int]) -> str:
    return "[" + ",".join(str(v) for v in sorted(values)) + "]"
