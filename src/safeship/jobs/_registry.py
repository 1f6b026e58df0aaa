"""``Jobs``: the task registry, enqueueing (sync and async, in the caller's transaction),
cron entries, and the context a handler receives."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

from safeship.jobs._complete import complete_async, complete_sync
from safeship.jobs._cron_expr import CronExpr
from safeship.jobs._enqueue import Row, async_kind, sync_kind, write_async, write_sync
from safeship.jobs._model import (
    Cancelled,
    UnknownTaskError,
    check_name,
    encode_args,
    uuid7,
    uuid7s,
)
from safeship.jobs._policy import Orphan, Retry, parse_rate

if TYPE_CHECKING:
    import sqlalchemy as sa

    from safeship.jobs._worker import Worker

__all__ = ["Cron", "JobContext", "Jobs", "Task"]

_MAX_UNIQUE = 300
_DAY = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A registered handler and its policies; ``task.enqueue(conn, **args)`` enqueues it."""

    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    priority: int = 0
    unique: bool | Callable[..., str] = False
    orphan: Orphan = Orphan.RERUN
    result_ttl: float = _DAY
    jobs: Jobs | None = field(default=None, repr=False, compare=False)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def unique_key(self, args: Mapping[str, Any]) -> str | None:
        if self.unique is False:
            return None
        key = (
            self.unique(**args)
            if callable(self.unique)
            else f"{self.name}:{encode_args(dict(sorted(args.items())))}"
        )
        if not isinstance(key, str) or not 1 <= len(key) <= _MAX_UNIQUE:
            raise ValueError(
                f"{self.name}: a unique key is 1-{_MAX_UNIQUE} characters, got {key!r}"
            )
        return key

    def row(
        self,
        args: Mapping[str, Any],
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> Row:
        """Check one job of this task and build its row; raises before anything is written
        (the write encodes the arguments, refusing a bad payload before any statement)."""
        if not isinstance(args, Mapping):
            raise TypeError(
                f"{self.name}: job arguments are a mapping of names, got {type(args).__name__}"
            )
        seconds, at = _when(delay, run_at)
        level = self.priority if priority is None else _priority(priority)
        key = unique_key if unique_key is not None else self.unique_key(args)
        if key is not None and not 1 <= len(key) <= _MAX_UNIQUE:
            raise ValueError(f"unique_key: 1-{_MAX_UNIQUE} characters, got {len(key)}")
        return Row(
            uuid7(),
            self.name,
            self.queue,
            dict(args),
            level,
            self.retry.attempts,
            key,
            seconds,
            at,
        )

    def rows(
        self,
        many: Iterable[Mapping[str, Any]],
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> list[Row]:
        """:meth:`row` for many jobs sharing the options: the options are checked, the
        delay computed and the clock read once for the whole batch."""
        batch = list(many)
        seconds, at = _when(delay, run_at)
        level = self.priority if priority is None else _priority(priority)
        if unique_key is not None and not 1 <= len(unique_key) <= _MAX_UNIQUE:
            raise ValueError(f"unique_key: 1-{_MAX_UNIQUE} characters, got {len(unique_key)}")
        name, queue, attempts = self.name, self.queue, self.retry.attempts
        rows = []
        for job_id, args in zip(uuid7s(len(batch)), batch, strict=True):
            if type(args) is not dict and not isinstance(args, Mapping):
                raise TypeError(
                    f"{name}: job arguments are a mapping of names, got {type(args).__name__}"
                )
            key = unique_key if unique_key is not None else self.unique_key(args)
            rows.append(Row(job_id, name, queue, dict(args), level, attempts, key, seconds, at))
        return rows

    def enqueue(self, conn: Any, /, **args: Any) -> uuid.UUID:
        """Enqueue one job in ``conn``'s transaction; its id (the existing one for a
        duplicate unique job)."""
        return write_sync(conn, sync_kind(conn, "enqueue"), [self.row(args)])[0]

    async def aenqueue(self, conn: Any, /, **args: Any) -> uuid.UUID:
        """:meth:`enqueue` on an async connection."""
        return (await write_async(conn, async_kind(conn, "enqueue"), [self.row(args)]))[0]


def _when(delay: float | None, run_at: datetime | None) -> tuple[float, datetime | None]:
    """(seconds after the database's now, or the time named): a ``run_at`` is kept as
    given (the write makes it no earlier than now), so jobs given one time share it."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        ahead = (run_at - datetime.now(UTC)).total_seconds()
        if ahead > 366 * _DAY:
            raise ValueError(f"run_at must be within 366 days, got {run_at.isoformat()}")
        return 0.0, run_at
    seconds = 0.0 if delay is None else float(delay)
    if not 0 <= seconds <= 366 * _DAY:
        raise ValueError(f"delay must be in [0 s, 366 days], got {delay!r}")
    return seconds, None


def _priority(value: int) -> int:
    if not isinstance(value, int) or not -1000 <= value <= 1000:
        raise ValueError(f"priority must be an int in [-1000, 1000], got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Cron:
    """A periodic job: ``task`` with ``args`` once per tick across the fleet; a tick is each
    multiple of ``every`` seconds since the epoch, or each time ``schedule`` names."""

    name: str
    task: str
    every: float  # seconds; for a schedule entry 60, the resolution of a cron expression
    args: Mapping[str, Any] = field(default_factory=dict)
    schedule: CronExpr | None = None


class JobContext:
    """What a handler gets as its first argument: who it is, a cancellation flag, progress,
    and ``complete(conn)`` to finish the job in the handler's own transaction."""

    def __init__(self, *, id: uuid.UUID, task: Task, attempt: int, token: int, args: Any) -> None:
        self.id = id
        self.task = task
        self.attempt = attempt
        self.token = token
        self.args = args
        self.completed = False
        self._progress: str | None = None
        self._lock = threading.Lock()
        # Made on first use: most jobs never look at them, and an Event costs a Condition.
        self._cancelled: threading.Event | None = None
        self._lease_lost: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when cancellation was requested, or this attempt lost its job."""
        if self._cancelled is None:
            with self._lock:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
        return self._cancelled

    @property
    def lease_lost(self) -> threading.Event:
        """Set when this attempt's lease was taken over (its outcome will not count)."""
        if self._lease_lost is None:
            with self._lock:
                if self._lease_lost is None:
                    self._lease_lost = threading.Event()
        return self._lease_lost

    def progress(self, value: Any) -> None:
        """Record progress (any bounded JSON); the next heartbeat stores it."""
        text = encode_args(value, field="progress")
        with self._lock:
            self._progress = text

    def take_progress(self) -> str | None:
        with self._lock:
            text, self._progress = self._progress, None
        return text

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled (or this attempt lost it)."""
        if self.cancelled.is_set():
            raise Cancelled(f"job {self.id} was cancelled")

    def complete(self, conn: Any, result: Any = None) -> None:
        """Finish the job in ``conn``'s transaction (sync); raises LeaseLostError if not ours."""
        complete_sync(
            conn, self.id, self.token, encode_args(result, field="result"), self.task.result_ttl
        )
        self.completed = True

    async def acomplete(self, conn: Any, result: Any = None) -> None:
        """:meth:`complete` on an async connection."""
        text = encode_args(result, field="result")
        await complete_async(conn, self.id, self.token, text, self.task.result_ttl)
        self.completed = True


class Jobs:
    """A registry of tasks (and cron entries) shared by the code that enqueues and the
    workers that run them.

    >>> jobs = Jobs()
    >>> @jobs.task(queue="emails", retry=Retry(attempts=5))
    ... async def send_confirmation(ctx, order_id): ...
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._limits: dict[str, int | None] = {}
        self._rates: dict[str, tuple[int, float]] = {}
        self._cron: dict[str, Cron] = {}

    @overload
    def task(self, fn: Callable[..., Any]) -> Task: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        queue: str = ...,
        retry: Retry | None = ...,
        timeout: float | None = ...,
        priority: int = ...,
        unique: bool | Callable[..., str] = ...,
        orphan: Orphan | str = ...,
        result_ttl: float = ...,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        retry: Retry | None = None,
        timeout: float | None = None,
        priority: int = 0,
        unique: bool | Callable[..., str] = False,
        orphan: Orphan | str = Orphan.RERUN,
        result_ttl: float = _DAY,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a handler (``handler(ctx, **args)``, sync or async) as a task."""

        def register(function: Callable[..., Any]) -> Task:
            task = Task(
                name=check_name("task name", name or function.__name__),
                fn=function,
                queue=check_name("queue", queue),
                retry=retry or Retry(),
                timeout=_timeout(timeout),
                priority=_priority(priority),
                unique=unique,
                orphan=Orphan(orphan),
                result_ttl=_ttl(result_ttl),
                jobs=self,
            )
            if task.name in self._tasks:
                raise ValueError(f"task {task.name!r} is already registered")
            self._tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def queue(self, name: str, *, concurrency: int | None = None, rate: str | None = None) -> None:
        """Limit queue ``name`` across every worker: at most ``concurrency`` jobs running at
        once, and at most ``rate`` starts per period (``"100/s"``, ``"30/m"``, ``"10/5s"``,
        counted in windows aligned to the database's clock).  ``None`` lifts a limit."""
        if concurrency is not None and (
            isinstance(concurrency, bool) or not 1 <= concurrency <= 100_000
        ):
            raise ValueError(f"concurrency must be in [1, 100000] or None, got {concurrency!r}")
        parsed = parse_rate(rate) if rate is not None else None
        queue = check_name("queue", name)
        self._limits[queue] = concurrency
        if parsed is None:
            self._rates.pop(queue, None)
        else:
            self._rates[queue] = parsed

    def cron(
        self,
        name: str,
        *,
        task: str | Task,
        every: float | None = None,
        schedule: str | None = None,
        tz: str = "UTC",
        args: Mapping[str, Any] | None = None,
    ) -> Cron:
        """Run ``task`` once per tick across the fleet: every ``every`` seconds (aligned to
        the epoch), or at each time the 5-field cron expression ``schedule`` names in ``tz``."""
        task_name = task.name if isinstance(task, Task) else task
        self.get(task_name)
        if (every is None) == (schedule is None):
            raise ValueError("give exactly one of every= (seconds) or schedule= (cron expression)")
        expr = CronExpr(schedule, tz) if schedule is not None else None
        if every is not None and not 1 <= every <= 366 * _DAY:
            raise ValueError(f"every must be in [1 s, 366 days], got {every!r}")
        entry = Cron(
            name=check_name("cron name", name),
            task=task_name,
            every=float(every) if every is not None else 60.0,
            args=dict(args or {}),
            schedule=expr,
        )
        encode_args(entry.args)
        self._cron[entry.name] = entry
        return entry

    @property
    def tasks(self) -> Mapping[str, Task]:
        return dict(self._tasks)

    @property
    def limits(self) -> Mapping[str, int | None]:
        return dict(self._limits)

    @property
    def rates(self) -> Mapping[str, tuple[int, float]]:
        """Each rate-limited queue's (starts, period in seconds)."""
        return dict(self._rates)

    @property
    def crons(self) -> Mapping[str, Cron]:
        return dict(self._cron)

    def get(self, name: str | Task) -> Task:
        if isinstance(name, Task):
            return name
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(
                f"no task named {name!r}; registered: {sorted(self._tasks)}"
            ) from None

    def _rows(
        self, task: str | Task, many: Iterable[Mapping[str, Any]], options: dict[str, Any]
    ) -> list[Row]:
        return self.get(task).rows(many, **options)

    def enqueue(
        self, conn: Any, task: str | Task, args: Mapping[str, Any] | None = None, **options: Any
    ) -> uuid.UUID:
        """Enqueue one job in ``conn``'s transaction (sync connection) and return its id.

        ``options``: ``delay`` (s) or ``run_at``, ``priority``, ``unique_key``."""
        kind = sync_kind(conn, "enqueue")
        return write_sync(conn, kind, self._rows(task, [args or {}], options))[0]

    async def aenqueue(
        self, conn: Any, task: str | Task, args: Mapping[str, Any] | None = None, **options: Any
    ) -> uuid.UUID:
        """:meth:`enqueue` on an async connection."""
        kind = async_kind(conn, "enqueue")
        return (await write_async(conn, kind, self._rows(task, [args or {}], options)))[0]

    def enqueue_many(
        self, conn: Any, task: str | Task, many: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[uuid.UUID]:
        """Enqueue many jobs of one task in one statement; their ids in order."""
        kind = sync_kind(conn, "enqueue_many")
        return write_sync(conn, kind, self._rows(task, many, options))

    async def aenqueue_many(
        self, conn: Any, task: str | Task, many: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[uuid.UUID]:
        """:meth:`enqueue_many` on an async connection."""
        kind = async_kind(conn, "enqueue_many")
        return await write_async(conn, kind, self._rows(task, many, options))

    def worker(self, database: str | sa.Engine, **options: Any) -> Worker:
        """A :class:`~safeship.jobs.Worker` for these tasks on ``database``."""
        from safeship.jobs._worker import Worker

        return Worker(self, database, **options)


def _timeout(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 7 * _DAY:
        raise ValueError(f"timeout must be in (0 s, 7 days] or None, got {value!r}")
    return value


def _ttl(value: float) -> float:
    if not 0 <= value <= 366 * _DAY:
        raise ValueError(f"result_ttl must be in [0, 366 days], got {value!r}")
    return float(value)
