"""The worker: claims batches, runs handlers, heartbeats on its own thread, rescues orphans.

One asyncio loop claims up to ``concurrency`` jobs at a time and records their outcomes in
batches (one statement per batch).  A thread of its own renews the leases of running jobs
every ``heartbeat`` seconds over its own connection, so a handler that blocks the event
loop still looks alive; the same beat stores progress and picks up cancellation requests.
Every ``rescue_every`` seconds the worker also looks for running jobs whose lease ran out
(their worker died) and applies each task's orphan policy, so an orphan runs again within
``lease + rescue_every`` seconds (6 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from safeship.jobs._model import Cancelled, JobPayloadError, encode_args
from safeship.jobs._policy import Decision, Orphan, decide_orphan
from safeship.jobs._registry import JobContext, Jobs, Task
from safeship.jobs._store import Claimed, Expired, Outcome, Store

if TYPE_CHECKING:
    from safeship.jobs._metrics import JobMetrics

__all__ = ["Worker"]

log = logging.getLogger("safeship.jobs")
_MAX_MESSAGE = 2000


@dataclass(slots=True)
class _Running:
    claimed: Claimed
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    recorded: bool = False
    started: float = field(default_factory=time.monotonic)


def _error(kind: str, attempt: int, error: BaseException | str) -> str:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    entry = {
        "attempt": attempt,
        "at": datetime.now(UTC).isoformat(),
        "kind": kind,
        "message": message[:_MAX_MESSAGE],
    }
    return json.dumps(entry)


class Worker:
    """Runs the jobs of ``jobs``' tasks from ``database`` (a PostgreSQL or SQLite URL, or a
    SQLAlchemy Engine) until :meth:`stop`.  All settings are keyword-only and checked here."""

    def __init__(
        self,
        jobs: Jobs,
        database: str | sa.Engine,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        lease: float = 5.0,
        heartbeat: float = 1.0,
        poll: float = 1.0,
        rescue_every: float = 1.0,
        shutdown_grace: float = 10.0,
        cron: bool = True,
        worker_id: str | None = None,
        listen: bool = True,
        store: Store | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        if not 1 <= concurrency <= 10_000:
            raise ValueError(f"concurrency must be in [1, 10000], got {concurrency!r}")
        if not 0 < heartbeat < lease <= 3600:
            raise ValueError(f"need 0 < heartbeat ({heartbeat}) < lease ({lease}) <= 3600")
        for name, value in (("poll", poll), ("rescue_every", rescue_every)):
            if not 0 < value <= 3600:
                raise ValueError(f"{name} must be in (0, 3600], got {value!r}")
        if not 0 <= shutdown_grace <= 3600:
            raise ValueError(f"shutdown_grace must be in [0, 3600], got {shutdown_grace!r}")
        self.jobs = jobs
        self.queues = sorted(set(queues or {t.queue for t in jobs.tasks.values()}))
        if not self.queues:
            raise ValueError("a worker needs at least one queue (register a task first)")
        self.concurrency = concurrency
        self.lease, self.heartbeat, self.poll = lease, heartbeat, poll
        self.rescue_every, self.shutdown_grace = rescue_every, shutdown_grace
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._database = database
        self._engine: sa.Engine | None = database if isinstance(database, sa.Engine) else None
        self._store = store or _store_for(database, listen)
        self._cron = cron and bool(jobs.crons)
        self._metrics = metrics
        self._running: dict[uuid.UUID, _Running] = {}
        # Handlers still running (``_running`` also holds finished ones whose outcome is
        # not written yet): the next batch is claimed while the last one is recorded.
        self._active = 0
        self._outcomes: list[tuple[Outcome, _Running]] = []
        self._flushed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="safeship-job")
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self._flushing = False
        self.processed = 0
        self.lost = 0

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop (thread- and signal-safe): no new claims, running jobs get
        ``shutdown_grace`` seconds to finish, then are handed back."""
        self._stop_requested.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._loop.call_soon_threadsafe(self._store.wake)

    def run_sync(self) -> None:
        asyncio.run(self.run())

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop`, then shut down gracefully."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            self._stopping.set()
        await self._store.open()
        try:
            await self._store.set_limits(
                {q: c for q, c in self.jobs.limits.items() if q in self.queues},
                {q: r for q, r in self.jobs.rates.items() if q in self.queues},
            )
            self._start_heartbeat()
            log.info("jobs.worker_started", extra={"worker": self.worker_id, "queues": self.queues})
            await self._loop_until_stopped()
            await self._shutdown()
        finally:
            self._beat_stop.set()
            if self._beat_thread is not None:
                await asyncio.to_thread(self._beat_thread.join, 5)
            if self._beat_thread is None or not self._beat_thread.is_alive():
                self._store.close_beat()  # a beat still in flight closes it itself when it ends
            await self._store.close()
            self._threads.shutdown(wait=False, cancel_futures=True)
            log.info("jobs.worker_stopped", extra={"worker": self.worker_id})

    async def _loop_until_stopped(self) -> None:
        next_rescue = next_prune = 0.0
        flusher = asyncio.create_task(self._flush_forever())
        cron = asyncio.create_task(self._cron_forever()) if self._cron else None
        try:
            while not self._stopping.is_set():
                free = min(
                    self.concurrency - self._active, 2 * self.concurrency - len(self._running)
                )
                claimed: list[Claimed] = []
                if free > 0:
                    claimed = await self._claim(free)
                    for job in claimed:
                        self._start(job)
                now = time.monotonic()
                if now >= next_rescue:
                    await self._rescue()
                    next_rescue = now + self.rescue_every
                if now >= next_prune:
                    await _prune_quietly(self._store.prune(), self.worker_id)
                    next_prune = now + 60.0
                if not claimed or self._active >= self.concurrency:
                    await self._store.wait(min(self.poll, self.rescue_every))
        finally:
            self._flushing = False  # the flusher ends after its current batch, never mid-write
            self._flushed.set()
            if cron is not None:
                cron.cancel()
            await asyncio.gather(flusher, *([cron] if cron else []), return_exceptions=True)

    async def _claim(self, free: int) -> list[Claimed]:
        try:
            return await self._store.claim(self.queues, free, self.worker_id, self.lease)
        except Exception as error:  # database gone: retry after a pause, do not die  # noqa: BLE001 - the database may fail any way; log and go on
            log.warning("jobs.claim_failed", extra={"worker": self.worker_id, "error": repr(error)})
            await self._reopen()
            return []

    async def _reopen(self) -> None:
        await asyncio.sleep(min(1.0, self.poll))
        with contextlib.suppress(Exception):
            await self._store.close()
        with contextlib.suppress(Exception):
            await self._store.open()

    # -- running ---------------------------------------------------------------------------

    def _start(self, job: Claimed) -> None:
        task = self.jobs.tasks.get(job.task)
        try:
            args = json.loads(job.args) if isinstance(job.args, str) else job.args
        except ValueError:
            args = None
        if task is None or not isinstance(args, dict):
            ctx = JobContext(
                id=job.id, task=task or _MISSING, attempt=job.attempts, token=job.token, args=args
            )
            running = _Running(job, ctx)
            reason = (
                f"no task named {job.task!r}" if task is None else "arguments are not a JSON object"
            )
            self._record(
                Outcome(job.id, job.token, "dead", error=_error("error", job.attempts, reason)),
                running,
            )
            return
        ctx = JobContext(id=job.id, task=task, attempt=job.attempts, token=job.token, args=args)
        running = _Running(job, ctx)
        self._running[job.id] = running
        self._active += 1
        running.task = asyncio.create_task(self._run_one(task, running, args))
        if self._metrics is not None:
            self._metrics.started(task.name, task.queue, time.time() - job.created_at.timestamp())
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "jobs.started",
                extra={"job_id": str(job.id), "task": task.name, "attempt": job.attempts},
            )

    async def _run_one(self, task: Task, running: _Running, args: dict[str, Any]) -> None:
        ctx = running.ctx
        try:
            result = await self._call(task, ctx, args)
        except asyncio.CancelledError:
            if self._stopping.is_set() or ctx.lease_lost.is_set():
                return  # handed back at shutdown, or no longer ours: nothing to record
            raise
        except BaseException as error:  # noqa: BLE001 - every failure is the job's outcome
            self._record(self._failed(task, running, error), running)
            return
        if ctx.completed:
            self._forget(running, "succeeded")
            return
        try:
            text = "null" if result is None else encode_args(result, field="result")
        except JobPayloadError as error:
            self._record(self._failed(task, running, error), running)
            return
        self._record(
            Outcome(ctx.id, ctx.token, "succeeded", result=text, ttl=task.result_ttl), running
        )

    async def _call(self, task: Task, ctx: JobContext, args: dict[str, Any]) -> Any:
        if task.is_async:
            if task.timeout is None:
                return await task.fn(ctx, **args)
            async with asyncio.timeout(task.timeout):
                return await task.fn(ctx, **args)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._threads, lambda: task.fn(ctx, **args))
        try:
            return await asyncio.wait_for(future, task.timeout)
        except TimeoutError:
            ctx.cancelled.set()  # the thread runs on; its token is fenced out from now on
            raise

    def _failed(self, task: Task, running: _Running, error: BaseException) -> Outcome:
        ctx = running.ctx
        if isinstance(error, Cancelled) or (
            ctx.cancelled.is_set()
            and not ctx.lease_lost.is_set()
            and not isinstance(error, TimeoutError)
        ):
            return Outcome(
                ctx.id,
                ctx.token,
                "cancelled",
                error=_error("cancelled", ctx.attempt, error),
                ttl=task.result_ttl,
            )
        kind = "timeout" if isinstance(error, TimeoutError) else "error"
        decision = task.retry.decide(error, ctx.attempt)
        return _outcome(
            ctx.id, ctx.token, decision, _error(kind, ctx.attempt, error), task.result_ttl
        )

    def _record(self, outcome: Outcome, running: _Running) -> None:
        if not running.recorded and running.claimed.id in self._running:
            self._active -= 1
            self._store.wake()  # a slot is free: claim while this outcome is written
        running.recorded = True
        self._outcomes.append((outcome, running))
        self._flushed.set()

    def _forget(self, running: _Running, state: str) -> None:
        if self._running.pop(running.claimed.id, None) is not None and not running.recorded:
            self._active -= 1
        self.processed += 1
        self._store.wake()
        if self._metrics is not None:
            self._metrics.finished(
                running.ctx.task.name,
                running.ctx.task.queue,
                state,
                time.monotonic() - running.started,
            )

    async def _flush_forever(self) -> None:
        self._flushing = True
        while self._flushing:
            await self._flushed.wait()
            self._flushed.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                done = await self._store.finish([o for o, _ in batch])
            except Exception as error:  # noqa: BLE001 - the database may fail any way; log and go on
                log.warning(
                    "jobs.finish_failed", extra={"worker": self.worker_id, "error": repr(error)}
                )
                self._outcomes = batch + self._outcomes  # kept: a later flush records them
                if self._stopping.is_set():
                    # Stopping: no retry loop (the database may be paused); what stays
                    # unwritten is rescued after its lease, not lost.
                    return
                await asyncio.sleep(min(1.0, self.poll))
                await self._reopen()
                continue
            logged = log.isEnabledFor(logging.INFO)
            for outcome, running in batch:
                if outcome.id not in done:
                    self.lost += 1
                    log.warning(
                        "jobs.lease_lost",
                        extra={"job_id": str(outcome.id), "outcome": outcome.state},
                    )
                elif logged:
                    log.info(
                        "jobs.state_changed",
                        extra={
                            "job_id": str(outcome.id),
                            "task": running.claimed.task,
                            "state": outcome.state,
                            "attempt": running.claimed.attempts,
                        },
                    )
                self._forget(running, outcome.state if outcome.id in done else "lost")

    # -- heartbeat -------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._beat_stop.clear()
        self._beat_thread = threading.Thread(
            target=self._beat_forever, name="safeship-jobs-heartbeat", daemon=True
        )
        self._beat_thread.start()

    def _beat_forever(self) -> None:
        try:
            while not self._beat_stop.wait(self.heartbeat):
                self.beat_once()
        finally:  # the thread owns its connection: one opened by a late beat is closed here
            self._store.close_beat()

    def beat_once(self) -> None:
        """Renew every running job's lease once (called by the heartbeat thread)."""
        running = list(self._running.values())
        if not running:
            return
        leases = [(r.claimed.id, r.claimed.token) for r in running]
        progress = {r.claimed.id: p for r in running if (p := r.ctx.take_progress()) is not None}
        try:
            ours, cancel = self._store.beat(leases, self.lease, progress)
        except Exception as error:  # noqa: BLE001 - the database may fail any way; log and go on
            log.warning(
                "jobs.heartbeat_failed", extra={"worker": self.worker_id, "error": repr(error)}
            )
            self._store.close_beat()
            return
        for r in running:
            if r.claimed.id not in ours and r.claimed.id in self._running:
                r.ctx.lease_lost.set()
                r.ctx.cancelled.set()
                log.warning(
                    "jobs.lease_lost", extra={"job_id": str(r.claimed.id), "worker": self.worker_id}
                )
            elif r.claimed.id in cancel:
                r.ctx.cancelled.set()

    # -- orphans ---------------------------------------------------------------------------

    async def _rescue(self) -> None:
        try:
            rescued = await self._store.rescue(self._decide_orphans, 100)
        except Exception as error:  # noqa: BLE001 - the database may fail any way; log and go on
            log.warning(
                "jobs.rescue_failed", extra={"worker": self.worker_id, "error": repr(error)}
            )
            return
        for outcome in rescued:
            log.warning(
                "jobs.orphan_rescued", extra={"job_id": str(outcome.id), "state": outcome.state}
            )
            if self._metrics is not None:
                self._metrics.rescued()
        if rescued:
            self._store.wake()

    def _decide_orphans(self, expired: list[Expired]) -> list[Outcome]:
        return [decide_expired(self.jobs, job) for job in expired]

    # -- shutdown --------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Give running jobs ``shutdown_grace`` seconds, then hand the rest back."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_grace)
        left = [r for r in self._running.values() if not r.recorded]
        for running in left:
            running.ctx.lease_lost.set()
            running.ctx.cancelled.set()
            if running.task is not None:
                running.task.cancel()
            back = Outcome(running.claimed.id, running.claimed.token, "pending", counts=False)
            self._record(back, running)
        try:
            # Bounded: with the database paused, an unwritten outcome is no loss (its lease
            # runs out and the job is rescued), but a shutdown that never ends is.
            await asyncio.wait_for(self._flush(), self.lease)
        except TimeoutError:
            log.warning(
                "jobs.shutdown_flush_abandoned",
                extra={"worker": self.worker_id, "count": len(self._outcomes)},
            )
        if left:
            log.info("jobs.handed_back", extra={"worker": self.worker_id, "count": len(left)})

    # -- cron ------------------------------------------------------------------------------

    async def _cron_forever(self) -> None:
        from safeship.jobs._cron import fire_due

        engine = self._sync_engine()
        while True:
            try:
                await asyncio.to_thread(fire_due, self.jobs, engine, time.time())
            except Exception as error:  # noqa: BLE001 - the database may fail any way; log and go on
                log.warning(
                    "jobs.cron_failed", extra={"worker": self.worker_id, "error": repr(error)}
                )
            await asyncio.sleep(min(1.0, min(c.every for c in self.jobs.crons.values()) / 4))

    def _sync_engine(self) -> sa.Engine:
        if self._engine is None:
            from safeship.db import create_engine

            assert isinstance(self._database, str)
            self._engine = create_engine(self._database)
        return self._engine


def _missing(ctx: JobContext, **_: Any) -> None:
    raise LookupError("task not registered")


_MISSING = Task(name="missing", fn=_missing)


def _outcome(
    job: uuid.UUID, token: int, decision: Decision, error: str, ttl: float, crash: bool = False
) -> Outcome:
    if decision.action == "dead":
        return Outcome(
            job, token, "dead", error=error, counts=decision.counts, crash=crash, ttl=None
        )
    if decision.action == "hold":
        return Outcome(job, token, "interrupted", error=error, counts=False, crash=crash)
    return Outcome(
        job,
        token,
        "pending",
        error=error,
        delay=decision.delay,
        counts=decision.counts,
        crash=crash,
    )


def decide_expired(jobs: Jobs, job: Expired) -> Outcome:
    """The outcome of a job whose lease ran out, from its task's orphan policy."""
    task = jobs.tasks.get(job.task)
    policy = task.orphan if task is not None else Orphan.RERUN
    retry = task.retry if task is not None else _MISSING.retry
    decision = decide_orphan(policy, retry, job.attempts, job.crashes + 1, random.random)
    error = _error("crash", job.attempts, "worker lost: lease expired mid-run")
    return _outcome(
        job.id, job.token, decision, error, task.result_ttl if task else 86400.0, crash=True
    )


async def _prune_quietly(awaitable: Any, worker: str) -> None:
    """Run a history prune; a failure is logged (``jobs.prune_failed``) and the loop goes on."""
    try:
        await awaitable
    except Exception as error:  # noqa: BLE001 - the database may fail any way; log and go on
        log.warning("jobs.prune_failed", extra={"worker": worker, "error": repr(error)})


def _store_for(database: str | sa.Engine, listen: bool) -> Store:
    if isinstance(database, sa.Engine):
        if database.dialect.name == "sqlite":
            from safeship.jobs._store_sqlite import SqliteStore

            return SqliteStore(database)
        url = database.url.render_as_string(hide_password=False)
    else:
        url = database
    if url.startswith("sqlite"):
        from safeship.db import create_engine
        from safeship.jobs._store_sqlite import SqliteStore

        return SqliteStore(create_engine(url))
    from safeship.jobs._store_pg import PostgresStore

    return PostgresStore(url, listen=listen)
