"""What a worker asks of a store, and the rows that cross that line (no I/O here)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["Claimed", "Decide", "Expired", "Outcome", "Store"]


@dataclass(frozen=True, slots=True)
class Claimed:
    """One job a worker claimed: ``token`` fences this attempt."""

    id: uuid.UUID
    task: str
    queue: str
    args: str
    attempts: int
    max_attempts: int
    crashes: int
    token: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Expired:
    """A running job whose lease ran out (its worker is gone or stuck)."""

    id: uuid.UUID
    task: str
    token: int
    attempts: int
    crashes: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ends.  ``state`` is where the job goes: ``succeeded``,
    ``cancelled`` or ``dead`` (to history), ``pending`` (retry after ``delay`` s), or
    ``interrupted``.  ``error`` is a JSON error-history entry; ``counts=False`` gives the
    attempt back; ``crash`` adds one to the crash count; ``ttl`` bounds the history row."""

    id: uuid.UUID
    token: int
    state: str
    result: str | None = None
    error: str | None = None
    delay: float = 0.0
    counts: bool = True
    crash: bool = False
    ttl: float | None = None


#: Turns expired leases into outcomes (the worker's orphan policy per task).
Decide = Callable[[list[Expired]], list[Outcome]]


class Store(Protocol):
    """The storage a :class:`~safeship.jobs.Worker` runs on (PostgreSQL or SQLite)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def set_limits(
        self,
        limits: Mapping[str, int | None],
        rates: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        """Store each queue's fleet-wide concurrency and rate (starts, period s)."""
        ...

    async def claim(
        self, queues: Sequence[str], limit: int, worker: str, lease: float
    ) -> list[Claimed]: ...
    async def finish(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]: ...
    async def rescue(self, decide: Decide, limit: int) -> list[Outcome]: ...
    async def prune(self) -> int: ...
    async def wait(self, seconds: float) -> None: ...
    def wake(self) -> None: ...
    def beat(
        self,
        leases: Sequence[tuple[uuid.UUID, int]],
        lease: float,
        progress: Mapping[uuid.UUID, str],
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Renew leases (sync, from the heartbeat thread on its own connection); returns
        (ids still ours, ids whose cancellation was requested)."""
        ...

    def close_beat(self) -> None: ...


def limited(limits: Mapping[str, int | None], queues: Sequence[str]) -> tuple[list[str], list[str]]:
    """Queues without a fleet-wide limit, and queues with one."""
    free = [q for q in queues if limits.get(q) is None]
    return free, [q for q in queues if limits.get(q) is not None]
