"""The relay: claim pending events of the partitions this process holds, publish them,
and delete (or archive) them only after the sink confirmed.

One asyncio loop drives it (``await relay.run()``); :meth:`Relay.start_thread` runs the
same loop in a background thread for sync applications.  Up to ``pipeline_depth`` batches
are in flight at once, and a key never has events in two in-flight batches, so per-key
order holds while the next claim overlaps the current batch's acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from safeship.outbox import metrics
from safeship.outbox._store import Failure, RelayStore
from safeship.outbox.model import DeliveryRate, Event, Outcome, Status, partition_of
from safeship.outbox.sinks.base import Sink
from safeship.resilience import Breaker, BreakerOpen, FullJitter
from safeship.resilience.schedules import Schedule

__all__ = ["Relay", "RelayConfig", "RelayThread"]

log = logging.getLogger("safeship.outbox")


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """Relay settings, checked at construction."""

    batch_size: int = 500
    pipeline_depth: int = 2
    max_attempts: int = 10
    backoff: Schedule = field(default_factory=lambda: FullJitter(base=1.0, cap=300.0))
    lease_ttl: float = 5.0
    poll_interval: float = 1.0
    archive_seconds: float | None = None
    listen: bool = True

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size, 100_000)
        _positive_int("pipeline_depth", self.pipeline_depth, 16)
        _positive_int("max_attempts", self.max_attempts, 1_000)
        for name in ("lease_ttl", "poll_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.01 <= value <= 3600:
                raise ValueError(f"RelayConfig.{name} must be seconds in [0.01, 3600]")
        if self.archive_seconds is not None and self.archive_seconds <= 0:
            raise ValueError("RelayConfig.archive_seconds must be > 0 or None (delete)")


def _positive_int(name: str, value: object, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"RelayConfig.{name} must be an int in [1, {high}], got {value!r}")


def _make_store(database: str | sa.Engine, config: RelayConfig) -> RelayStore:
    url = database if isinstance(database, str) else database.url.render_as_string(False)
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        from safeship.outbox.store_pg import PostgresStore, asyncpg_dsn

        return PostgresStore(
            asyncpg_dsn(url),
            lease_ttl=config.lease_ttl,
            archive_seconds=config.archive_seconds,
            listen=config.listen,
        )
    if backend == "sqlite":
        from safeship.db import create_engine
        from safeship.outbox.store_sqlite import SqliteStore

        engine = database if isinstance(database, sa.Engine) else create_engine(url)
        return SqliteStore(engine, archive_seconds=config.archive_seconds)
    raise ValueError(f"the outbox relay supports postgresql and sqlite, not {backend!r}")


class Relay:
    """Move staged events from the outbox table to ``sink``, at least once, ordered per key.

    ``database`` is a URL or a SQLAlchemy engine (PostgreSQL or SQLite).  Broker calls pass
    through ``breaker`` (default: opens after 5 consecutive failed batches for 5 s), so a
    broker that is down makes the relay wait instead of spinning.
    """

    def __init__(
        self,
        database: str | sa.Engine,
        sink: Sink,
        *,
        config: RelayConfig | None = None,
        breaker: Breaker | None = None,
        relay_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or RelayConfig()
        self.sink = sink
        self.relay_id = relay_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.breaker = breaker or Breaker(
            f"outbox-relay-{zlib.crc32(self.relay_id.encode()):08x}",
            open_duration=5.0,
            register=False,
        )
        self._store = _make_store(database, self.config)
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions: frozenset[int] = frozenset()
        self._inflight: dict[int, int] = {}  # seq -> partition
        self._inflight_keys: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.published = 0
        self._rate = DeliveryRate()

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish its in-flight batches and return (thread-safe)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._stop_now)
        else:
            self._stopping.set()

    def _stop_now(self) -> None:
        self._stopping.set()
        self._store.wake()

    async def run(self) -> None:
        """Relay until :meth:`stop`; reconnects after database errors."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if not await self._open_sink():
            return
        try:
            while not self._stopping.is_set():
                try:
                    await self._session()
                except (TimeoutError, OSError, sa.exc.SQLAlchemyError) as exc:
                    await self._recover(exc)
                except Exception as exc:
                    if type(exc).__module__.split(".")[0] != "asyncpg":
                        raise
                    await self._recover(exc)
        finally:
            await self._drain()
            await self._store.close()
            await self.sink.close()

    async def _open_sink(self) -> bool:
        """Open the sink, retrying while the broker is unreachable; False if stopped first."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await self.sink.open()
                return True
            except Exception as exc:  # noqa: BLE001 - any connect error: wait and retry
                log.warning("outbox.relay.sink_open_failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 5.0)
        return False

    async def _recover(self, exc: BaseException) -> None:
        log.warning("outbox.relay.database_error: %r", exc)
        await self._drain()
        await self._store.close()
        self._partitions = frozenset()
        metrics.leases(self.relay_id, 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), 0.2 + self._rng.random() * 0.5)

    async def _session(self) -> None:
        await self._store.open()
        next_beat = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_beat:
                await self._heartbeat()
                every = 0.1 if self._store.wants_more else self.config.lease_ttl / 3
                next_beat = time.monotonic() + every
            await self._step(next_beat)

    async def _heartbeat(self) -> None:
        busy = frozenset(self._inflight.values())
        rate = self._rate.observe(time.monotonic(), self.published)
        self._partitions = await self._store.heartbeat(
            self.relay_id, busy, self.published, len(self._inflight), rate
        )
        metrics.leases(self.relay_id, len(self._partitions))

    async def _step(self, next_beat: float) -> None:
        if len(self._tasks) >= self.config.pipeline_depth:
            await self._wait_tasks(max(0.01, next_beat - time.monotonic()))
            return
        wait = self._breaker_wait()
        if wait > 0:
            await self._idle(min(wait, max(0.01, next_beat - time.monotonic())))
            return
        claimed = await self._store.claim(
            self._partitions, self.config.batch_size, list(self._inflight)
        )
        events = [e for e in claimed if e.aggregate_id not in self._inflight_keys]
        if events:
            self._launch(events)
        elif self._tasks and claimed:
            await self._wait_tasks(self.config.poll_interval)
        else:
            await self._idle(
                min(self.config.poll_interval, max(0.01, next_beat - time.monotonic()))
            )

    def _breaker_wait(self) -> float:
        remaining = self.breaker.open_remaining()
        return 0.0 if remaining is None else remaining

    async def _idle(self, seconds: float) -> None:
        if self._tasks:
            await self._wait_tasks(seconds)
        else:
            await self._store.wait(seconds)

    async def _wait_tasks(self, seconds: float) -> None:
        waker = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait(
            {*self._tasks, waker}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        waker.cancel()
        for task in done:
            if task is not waker:
                task.result()

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()
        self._inflight_keys.clear()

    # -- one batch -------------------------------------------------------------------

    def _launch(self, events: list[Event]) -> None:
        for event in events:
            self._inflight[event.seq] = partition_of(event.aggregate_id)
            self._inflight_keys.add(event.aggregate_id)
        task = asyncio.create_task(self._deliver(events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, events: list[Event]) -> None:
        try:
            outcomes = await self._publish(events)
            if outcomes is not None:
                await self._record(events, outcomes)
        finally:
            for event in events:
                self._inflight.pop(event.seq, None)
                self._inflight_keys.discard(event.aggregate_id)

    async def _publish(self, events: list[Event]) -> Sequence[Outcome] | None:
        try:
            permit = self.breaker.allow()
        except BreakerOpen:
            return None
        started = time.monotonic()
        try:
            outcomes = await self.sink.publish(events)
        except Exception as exc:  # noqa: BLE001 - any sink error means "not delivered"
            self.breaker.record_failure(permit, started)
            log.warning("outbox.relay.sink_unavailable: %r", exc)
            metrics.sink_failed(len(events))
            return None
        if len(outcomes) != len(events):
            raise RuntimeError(
                f"sink {self.sink!r} returned {len(outcomes)} outcomes for {len(events)} events"
            )
        # Per-event rejections mean the broker answered: only a raised error trips the breaker.
        self.breaker.record_success(permit, started)
        metrics.published(events, outcomes, time.monotonic() - started)
        return outcomes

    async def _record(self, events: list[Event], outcomes: Sequence[Outcome]) -> None:
        done: list[int] = []
        failures: list[Failure] = []
        failed_keys: set[str] = set()
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome.status is Status.DELIVERED:
                done.append(event.seq)
            elif outcome.status is not Status.SKIPPED and event.aggregate_id not in failed_keys:
                failed_keys.add(event.aggregate_id)
                failures.append(self._failure(event, outcome))
        await self._store.complete(done)
        await self._store.fail(failures)
        self.published += len(done)

    def _failure(self, event: Event, outcome: Outcome) -> Failure:
        error = outcome.error or outcome.status.value
        attempt = event.attempts + 1
        if outcome.status is Status.PERMANENT or attempt >= self.config.max_attempts:
            metrics.dead(1)
            log.warning(
                "outbox.relay.dead_letter", extra={"event_id": str(event.id), "error": error}
            )
            return Failure(event.seq, error, None)
        delay = self.config.backoff.delay(attempt, 0.0, self._rng)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        return Failure(event.seq, error, delay)

    # -- embedding -------------------------------------------------------------------

    def start_thread(self) -> RelayThread:
        """Run this relay in a daemon thread with its own event loop; ``.stop()`` ends it."""
        return RelayThread(self)


class RelayThread:
    """A relay running in a background thread (for sync apps and the demo)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name="safeship-outbox-relay", daemon=True
        )
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self.relay.run())
        except BaseException as exc:  # noqa: BLE001 - kept for the caller of stop()
            self.error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay, wait for its in-flight batches, and re-raise a crash, if any."""
        self.relay.stop()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
