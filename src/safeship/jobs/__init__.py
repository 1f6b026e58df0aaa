"""Durable background jobs: enqueue in your transaction, workers that never lose a job.

``jobs.enqueue(conn, ...)`` (sync connections) and ``await jobs.aenqueue(conn, ...)``
(async ones) write a job through the caller's own connection or session, so it exists iff
the business write commits.  A :class:`Worker` claims jobs in batches (``SKIP LOCKED`` on
PostgreSQL), heartbeats on its own thread and connection, fences every attempt with a
token, retries with exponential backoff and full jitter, and rescues orphans of a killed
worker within seconds.  Finished jobs move to a history table; dead letters can be listed,
retried and purged.
"""

from safeship._extras import require

require("db", "sqlalchemy", feature="safeship.jobs")

from safeship.jobs._admin import (  # noqa: E402
    QueueStats,
    cancel,
    count_dead,
    dead_letters,
    interrupted,
    purge_dead,
    retry_dead,
    stats,
    status,
)
from safeship.jobs._cron_expr import CronError, CronExpr  # noqa: E402
from safeship.jobs._health import jobs_check  # noqa: E402
from safeship.jobs._http import aaccepted_in, accepted, accepted_in, status_response  # noqa: E402
from safeship.jobs._metrics import JobMetrics  # noqa: E402
from safeship.jobs._model import (  # noqa: E402
    Cancelled,
    GiveUp,
    JobConnectionError,
    JobPayloadError,
    JobsError,
    JobState,
    JobStatus,
    LeaseLostError,
    PurgeMismatchError,
    Snooze,
    UnknownJobError,
    UnknownTaskError,
)
from safeship.jobs._policy import Orphan, Retry  # noqa: E402
from safeship.jobs._registry import Cron, JobContext, Jobs, Task  # noqa: E402
from safeship.jobs._worker import Worker  # noqa: E402

__all__ = [
    "Cancelled",
    "Cron",
    "CronError",
    "CronExpr",
    "GiveUp",
    "JobConnectionError",
    "JobContext",
    "JobMetrics",
    "JobPayloadError",
    "JobState",
    "JobStatus",
    "Jobs",
    "JobsError",
    "LeaseLostError",
    "Orphan",
    "PurgeMismatchError",
    "QueueStats",
    "Retry",
    "Snooze",
    "Task",
    "UnknownJobError",
    "UnknownTaskError",
    "Worker",
    "aaccepted_in",
    "accepted",
    "accepted_in",
    "cancel",
    "count_dead",
    "dead_letters",
    "interrupted",
    "jobs_check",
    "purge_dead",
    "retry_dead",
    "stats",
    "status",
    "status_response",
]
