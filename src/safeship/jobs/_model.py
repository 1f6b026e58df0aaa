"""Job states, the value objects a caller sees, and the errors of the jobs slice (pure)."""

from __future__ import annotations

import enum
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeship._uuid7 import uuid7, uuid7s
from safeship.errors import SafeshipError

__all__ = [
    "Cancelled",
    "GiveUp",
    "JobConnectionError",
    "JobPayloadError",
    "JobState",
    "JobStatus",
    "JobsError",
    "LeaseLostError",
    "Snooze",
    "UnknownJobError",
    "UnknownTaskError",
    "encode_args",
    "encode_many",
    "uuid7",
    "uuid7s",
]

#: Cap on a job's encoded arguments (and on a result or progress value), in bytes.
MAX_ARGS_BYTES = 256 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JobState(enum.StrEnum):
    """Where a job is.  The first three live in the hot table, the rest in history."""

    PENDING = "pending"  # waiting for ``run_at`` and a free worker (also: retrying)
    RUNNING = "running"  # claimed by a worker holding a live lease
    INTERRUPTED = "interrupted"  # its worker died mid-run; held for a human (orphan="hold")
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    DEAD = "dead"  # out of attempts or given up: a dead letter with its error history

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.CANCELLED, JobState.DEAD)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    """A job as :meth:`Jobs.status` reports it (and the HTTP status resource shows it)."""

    id: uuid.UUID
    task: str
    queue: str
    state: JobState
    attempts: int
    max_attempts: int
    crashes: int
    priority: int
    args: Any
    progress: Any
    result: Any
    errors: list[dict[str, Any]]
    created_at: datetime
    run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (ids and times as text)."""
        return {
            "id": str(self.id),
            "task": self.task,
            "queue": self.queue,
            "state": self.state.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "crashes": self.crashes,
            "priority": self.priority,
            "progress": self.progress,
            "result": self.result,
            "errors": self.errors,
            "cancel_requested": self.cancel_requested,
            **{
                name: (value.isoformat() if value is not None else None)
                for name, value in (
                    ("created_at", self.created_at),
                    ("run_at", self.run_at),
                    ("started_at", self.started_at),
                    ("finished_at", self.finished_at),
                )
            },
        }


class JobsError(SafeshipError):
    """Base class of the jobs slice's errors."""


class UnknownTaskError(JobsError, LookupError):
    """No task of that name is registered with this :class:`Jobs`."""


class UnknownJobError(JobsError, LookupError):
    """No job has that id (never enqueued, or its history row expired)."""


class PurgeMismatchError(JobsError, RuntimeError):
    """A purge matched another number of dead letters than the operator confirmed; nothing
    was deleted."""


class JobPayloadError(JobsError, ValueError):
    """Arguments, a result or a progress value that is not bounded JSON."""


class JobConnectionError(JobsError, TypeError):
    """``enqueue`` got an async connection (use ``aenqueue``) or the other way round."""


class LeaseLostError(JobsError):
    """This attempt no longer owns its job (its lease was taken over, it was handed back
    or cancelled): it may not finish it, record a result or complete it in a transaction.

    Raised by ``ctx.complete(conn)`` so the caller's transaction rolls back with it."""


class Snooze(JobsError):  # noqa: N818 - raised by a handler as a verb: "snooze this job"
    """Raise from a handler to run the job again after ``seconds`` without using an attempt."""

    def __init__(self, seconds: float) -> None:
        if not 0 <= seconds <= 365 * 86400:
            raise ValueError(f"Snooze: seconds must be in [0, 1 year], got {seconds!r}")
        super().__init__(f"snoozed for {seconds}s")
        self.seconds = float(seconds)


class GiveUp(JobsError):  # noqa: N818 - raised by a handler as a verb
    """Raise from a handler to send the job to dead letters now, whatever attempts remain."""


class Cancelled(JobsError):  # noqa: N818 - raised by ``ctx.check_cancelled()``
    """The job was cancelled while running; raised by ``ctx.check_cancelled()``."""


def check_name(kind: str, value: str) -> str:
    """A task, queue or cron name: 1-100 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{kind}: 1-100 characters of A-Z a-z 0-9 _ . : -, got {value!r}")
    return value


def encode_args(value: Any, *, field: str = "args") -> str:
    """``value`` as compact JSON text, or :class:`JobPayloadError` saying what is wrong."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise JobPayloadError(f"{field}: not JSON ({error})") from None
    if "\\u0000" in text:
        raise JobPayloadError(f"{field}: NUL characters cannot be stored")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise JobPayloadError(f"{field}: invalid Unicode (a lone surrogate)") from None
    if size > MAX_ARGS_BYTES:
        raise JobPayloadError(f"{field}: {size} bytes, more than {MAX_ARGS_BYTES}")
    return text


def encode_many(values: list[Any], *, field: str = "args") -> str:
    """``values`` as one compact JSON array, each item held to :func:`encode_args`'s rules
    (the same text as its items' encodings joined in brackets).

    The whole list is encoded in one call; only when that fails a check (not JSON, a NUL,
    a lone surrogate, or more than the cap in all, so some item might exceed it) is each
    item encoded on its own, which names the offending error or passes them all."""
    try:
        text = _ENCODER.encode(values)
    except (TypeError, ValueError, RecursionError):
        text = ""
    if text and "\\u0000" not in text:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            size = MAX_ARGS_BYTES + 1
        if size <= MAX_ARGS_BYTES:
            return text
    return "[" + ",".join([encode_args(value, field=field) for value in values]) + "]"
