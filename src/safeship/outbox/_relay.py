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

from safeship.outbox import _metrics as metrics
from safeship.outbox._model import SKIPPED, DeliveryRate, Event, Outcome, Status, partition_of
from safeship.outbox._outage import OutageLog, first_line
from safeship.outbox._store import Failure, RelayStore
from safeship.outbox.sinks._base import Sink, error_text
from safeship.resilience import Breaker, BreakerOpen, FullJitter
from safeship.resilience._schedules import Schedule

__all__ = ["Relay", "RelayConfig", "RelayThread"]

log = logging.getLogger("safeship.outbox")

_FIRST_OPEN_DELAY = 0.2
_MAX_OPEN_DELAY = 5.0
#: Errors a sink raises when the broker, not an event, is the problem.
_UNAVAILABLE = (ConnectionError, OSError, TimeoutError)


def _partial(error: BaseException, count: int) -> list[Outcome]:
    """The outcomes a :class:`SinkUnavailableError` carries, or all SKIPPED."""
    outcomes = getattr(error, "outcomes", None)
    if outcomes is None or len(outcomes) != count:
        return [SKIPPED] * count
    return list(outcomes)


async def _abandon(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` and give it a second to end.  Some client libraries swallow a
    cancellation while connecting; such a task is left to end on its own deadline rather
    than holding up the relay's shutdown."""
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _merge(events: Sequence[Event], sent: Sequence[Outcome]) -> list[Outcome]:
    """Outcomes for ``events`` from the sink's outcomes for the sendable ones; a stored
    event no sink can send (``invalid``) is PERMANENT."""
    outcomes = iter(sent)
    return [
        next(outcomes) if event.invalid is None else Outcome(Status.PERMANENT, event.invalid)
        for event in events
    ]


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
    #: Deadline of one attempt to open the sink (connect to the broker).
    connect_timeout: float = 10.0
    #: After ``stop()``, how long in-flight batches may take before they are abandoned
    #: (left pending) and the sink and database connections are closed.
    shutdown_timeout: float = 10.0
    #: While the broker (or database) is unavailable, one warning line at most this often.
    outage_log_interval: float = 60.0
    #: One ``outbox.relay.backlog`` info line this often (pending, published, rate,
    #: partitions, in flight); None logs none.
    backlog_log_interval: float | None = 60.0

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size, 100_000)
        _positive_int("pipeline_depth", self.pipeline_depth, 16)
        _positive_int("max_attempts", self.max_attempts, 1_000)
        for name in (
            "lease_ttl",
            "poll_interval",
            "connect_timeout",
            "shutdown_timeout",
            "outage_log_interval",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"RelayConfig.{name} must be seconds in [0.01, 3600]")
            if not 0.01 <= value <= 3600:
                raise ValueError(f"RelayConfig.{name} must be seconds in [0.01, 3600]")
        if self.archive_seconds is not None and self.archive_seconds <= 0:
            raise ValueError("RelayConfig.archive_seconds must be > 0 or None (delete)")
        every = self.backlog_log_interval
        if every is not None and (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not 0.01 <= every <= 86400
        ):
            raise ValueError(
                "RelayConfig.backlog_log_interval must be seconds in [0.01, 86400] or None"
            )


def _positive_int(name: str, value: object, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"RelayConfig.{name} must be an int in [1, {high}], got {value!r}")


def _make_store(database: str | sa.Engine, config: RelayConfig) -> RelayStore:
    url = database if isinstance(database, str) else database.url.render_as_string(False)
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        from safeship.outbox._store_pg import PostgresStore, asyncpg_dsn

        return PostgresStore(
            asyncpg_dsn(url),
            lease_ttl=config.lease_ttl,
            archive_seconds=config.archive_seconds,
            listen=config.listen,
        )
    if backend == "sqlite":
        from safeship.db import create_engine
        from safeship.outbox._store_sqlite import SqliteStore

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
        self._stop_requested = False
        self._sink_open = False
        self._next_open = 0.0
        self._open_delay = _FIRST_OPEN_DELAY
        self._sink_name = type(sink).__name__
        self._sink_outage = OutageLog(
            log,
            event="outbox.relay.sink_unavailable",
            recovered_event="outbox.relay.sink_recovered",
            interval=self.config.outage_log_interval,
        )
        self._db_outage = OutageLog(
            log,
            event="outbox.relay.database_unavailable",
            recovered_event="outbox.relay.database_recovered",
            interval=self.config.outage_log_interval,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions: frozenset[int] = frozenset()
        self._inflight: dict[int, int] = {}  # seq -> partition
        self._inflight_keys: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.published = 0
        #: Broker failures seen: failed opens and batches the broker could not take.
        self.sink_failures = 0
        self._rate = DeliveryRate()
        self._next_backlog_log = 0.0
        self._last_rate = 0.0

    @property
    def sink_open(self) -> bool:
        """Whether the sink is open (the broker connected) right now."""
        return self._sink_open

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish its in-flight batches and return (thread-safe); it
        returns within ``shutdown_timeout``, whatever the broker does."""
        self._stop_requested = True
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._stop_now)
        else:
            self._stopping.set()

    def _stop_now(self) -> None:
        self._stopping.set()
        self._store.wake()

    async def run(self) -> None:
        """Relay until :meth:`stop`; reconnects after database and broker errors."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
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
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Drain, then close the store and the sink, all within ``shutdown_timeout``."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        await self._drain(deadline)
        for closing in (self._store.close, self.sink.close):
            task = asyncio.ensure_future(closing())
            await asyncio.wait({task}, timeout=max(0.1, deadline - time.monotonic()))
            if not task.done():
                await _abandon(task)
            elif not task.cancelled() and task.exception() is not None:
                error = first_line(task.exception() or "")
                log.warning("outbox.relay.close_failed", extra={"error": error})
        self._sink_open = False
        self._stop_requested = False

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, seconds))

    async def _open_sink(self, next_beat: float) -> None:
        """One bounded attempt to open the sink, when the backoff allows; a stop cuts it."""
        now = time.monotonic()
        if now < self._next_open:
            await self._sleep(min(self._next_open - now, max(0.01, next_beat - now)))
            return
        opening = asyncio.ensure_future(self.sink.open())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait(
            {opening, stopping},
            timeout=self.config.connect_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopping.cancel()
        if not opening.done():
            await _abandon(opening)
            if self._stopping.is_set():
                return
            error: BaseException | None = TimeoutError(
                f"the sink did not open within {self.config.connect_timeout}s"
            )
        elif opening.cancelled():
            return
        else:
            error = opening.exception()
        if error is None:
            self._sink_open = True
            self._open_delay = _FIRST_OPEN_DELAY
            self._sink_outage.recovered(sink=self._sink_name)
            return
        self._next_open = time.monotonic() + self._open_delay
        self._open_delay = min(self._open_delay * 2, _MAX_OPEN_DELAY)
        await self._note_unavailable(error, "open")

    async def _note_unavailable(self, error: BaseException, phase: str) -> None:
        """Count a broker failure; log it (with the pending count) when the throttle allows."""
        self.sink_failures += 1
        pending = await self._pending() if self._sink_outage.due else None
        self._sink_outage.failed(error, sink=self._sink_name, phase=phase, pending=pending)

    async def _pending(self) -> int | None:
        try:
            return await asyncio.wait_for(self._store.pending(), 5.0)
        except Exception:  # noqa: BLE001 - the count is informative only
            return None

    async def _recover(self, exc: BaseException) -> None:
        self._db_outage.failed(exc, relay=self.relay_id)
        await self._drain(time.monotonic() + self.config.shutdown_timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._store.close(), self.config.shutdown_timeout)
        self._partitions = frozenset()
        metrics.leases(self.relay_id, 0)
        await self._sleep(0.2 + self._rng.random() * 0.5)

    async def _session(self) -> None:
        await self._store.open()
        self._db_outage.recovered(relay=self.relay_id)
        next_beat = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_beat:
                await self._heartbeat()
                every = 0.1 if self._store.wants_more else self.config.lease_ttl / 3
                next_beat = time.monotonic() + every
            if self._sink_open:
                await self._step(next_beat)
            else:
                await self._open_sink(next_beat)

    async def _heartbeat(self) -> None:
        busy = frozenset(self._inflight.values())
        rate = self._rate.observe(time.monotonic(), self.published)
        self._partitions = await self._store.heartbeat(
            self.relay_id, busy, self.published, len(self._inflight), rate
        )
        metrics.leases(self.relay_id, len(self._partitions))
        self._last_rate = rate
        await self._log_backlog()

    async def _log_backlog(self) -> None:
        """The periodic ``outbox.relay.backlog`` line (first one at the first heartbeat)."""
        every = self.config.backlog_log_interval
        now = time.monotonic()
        if every is None or now < self._next_backlog_log:
            return
        self._next_backlog_log = now + every
        log.info(
            "outbox.relay.backlog",
            extra={
                "relay": self.relay_id,
                "pending": await self._pending(),
                "published": self.published,
                "rate_per_second": round(self._last_rate, 3),
                "partitions": len(self._partitions),
                "in_flight": len(self._inflight),
                "sink": self._sink_name,
                "sink_open": self._sink_open,
            },
        )

    async def _step(self, next_beat: float) -> None:
        if len(self._tasks) >= self.config.pipeline_depth:
            await self._wait_tasks(max(0.01, next_beat - time.monotonic()))
            return
        wait = self._breaker_wait()
        if wait > 0:
            await self._idle(min(wait, max(0.01, next_beat - time.monotonic())))
            return
        # Keys in flight when the claim is read are held back even if their batch ends
        # before it returns: a batch that failed may have rescheduled an earlier event of
        # the key after the claim's snapshot, which then still offers the later ones.
        busy = frozenset(self._inflight_keys)
        claimed = await self._store.claim(
            self._partitions, self.config.batch_size, list(self._inflight)
        )
        events = [
            e
            for e in claimed
            if e.aggregate_id not in busy and e.aggregate_id not in self._inflight_keys
        ]
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

    async def _drain(self, deadline: float) -> None:
        """Let in-flight batches finish until ``deadline``, then cancel the rest (their
        events stay pending and are published again: at least once)."""
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: errors while stopping are not re-raised
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
        """One outcome per event; None when the breaker is open (nothing was tried)."""
        try:
            permit = self.breaker.allow()
        except BreakerOpen:
            return None
        started = time.monotonic()
        sendable = [event for event in events if event.invalid is None]
        try:
            outcomes = await self.sink.publish(sendable) if sendable else []
        except _UNAVAILABLE as exc:
            self.breaker.record_failure(permit, started)
            metrics.sink_failed(len(sendable))
            await self._note_unavailable(exc, "publish")
            return _merge(events, _partial(exc, len(sendable)))
        except Exception as exc:  # noqa: BLE001 - a per-event error the sink let through
            outcomes = await self._isolate(sendable, exc)
        if len(outcomes) != len(sendable):
            raise RuntimeError(
                f"sink {self.sink!r} returned {len(outcomes)} outcomes for {len(sendable)} events"
            )
        # Per-event rejections mean the broker answered: only a raised error trips the breaker.
        self.breaker.record_success(permit, started)
        self._sink_outage.recovered(sink=self._sink_name)
        metrics.published(sendable, outcomes, time.monotonic() - started)
        return _merge(events, outcomes)

    async def _isolate(self, events: list[Event], error: Exception) -> list[Outcome]:
        """The sink raised an error that is not about the broker being reachable: publish
        the events one at a time, so the error counts against the event that causes it
        (retried, dead-lettered after ``max_attempts``) and the others go through."""
        log.warning(
            "outbox.relay.sink_error",
            extra={"sink": self._sink_name, "error": first_line(error), "events": len(events)},
        )
        outcomes: list[Outcome] = [SKIPPED] * len(events)
        for index, event in enumerate(events):
            try:
                outcomes[index] = (await self.sink.publish([event]))[0]
            except _UNAVAILABLE as exc:
                await self._note_unavailable(exc, "publish")
                partial = _partial(exc, 1)
                outcomes[index] = partial[0]
                break
            except Exception as exc:  # noqa: BLE001 - this event's own error
                outcomes[index] = Outcome(Status.RETRY, error_text(exc))
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
        return RelayThread(self).start()


class RelayThread:
    """A relay in a background thread with its own event loop (for sync apps and the demo).

    Building one starts nothing: :meth:`start` does (``Relay.start_thread()`` builds and
    starts one), :meth:`stop` ends it, and ``with RelayThread(relay):`` does both.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name="safeship-outbox-relay", daemon=True
        )

    def start(self) -> RelayThread:
        """Start the thread (once); returns the running relay thread."""
        if self._thread.ident is not None:
            raise RuntimeError("RelayThread.start(): this relay thread was already started")
        self._thread.start()
        return self

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self.relay.run())
        except BaseException as exc:  # noqa: BLE001 - kept for the caller of stop()
            self.error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay, wait for its in-flight batches, and re-raise a crash, if any."""
        self.relay.stop()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
