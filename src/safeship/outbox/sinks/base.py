"""The sink contract, routing templates, and per-key dispatch for sinks without ordering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from safeship.errors import SafeshipError
from safeship.outbox.model import DELIVERED, SKIPPED, Event, Outcome, Status

__all__ = [
    "PermanentError",
    "Route",
    "Sink",
    "SinkUnavailableError",
    "publish_per_key",
]


class SinkUnavailableError(SafeshipError, ConnectionError):
    """The broker cannot take any event now; the relay backs off without counting attempts."""


class PermanentError(SafeshipError):
    """Raised by a callback (or a sink) for an event that will never be accepted."""


class Sink(Protocol):
    """Where a relay publishes.  ``publish`` returns one :class:`Outcome` per event, in order,
    or raises (best :class:`SinkUnavailableError`) when the whole batch could not be tried.

    ``ordered`` is True when the sink sends a batch in order on one connection (the broker
    stores it in that order); False sinks must dispatch per key with :func:`publish_per_key`.
    """

    ordered: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]: ...


_FIELDS = frozenset({"aggregate_type", "type", "aggregate_id"})


@dataclass(frozen=True, slots=True)
class Route:
    """A topic, subject or routing key from a template such as ``"events.{aggregate_type}"``.

    Fields: ``aggregate_type``, ``type``, ``aggregate_id``.
    """

    template: str = "{aggregate_type}.{type}"

    def __post_init__(self) -> None:
        import string

        names = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        unknown = names - _FIELDS
        if unknown or not self.template:
            raise ValueError(
                f"route template {self.template!r} may only use {{aggregate_type}}, {{type}}, "
                f"{{aggregate_id}}; unknown: {sorted(unknown)}"
            )

    def __call__(self, event: Event) -> str:
        return self.template.format(
            aggregate_type=event.aggregate_type, type=event.type, aggregate_id=event.aggregate_id
        )


async def publish_per_key(
    events: Sequence[Event],
    send: Callable[[Event], Awaitable[Outcome]],
    *,
    concurrency: int = 32,
) -> list[Outcome]:
    """Send each key's events one after another (keys in parallel); after a key's first
    failure the rest of that key's events are SKIPPED, so order per key holds."""
    outcomes: list[Outcome] = [SKIPPED] * len(events)
    chains: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        chains.setdefault(event.aggregate_id, []).append(index)
    gate = asyncio.Semaphore(concurrency)

    async def run_chain(indexes: list[int]) -> None:
        async with gate:
            for index in indexes:
                outcome = await send(events[index])
                outcomes[index] = outcome
                if outcome.status is not Status.DELIVERED:
                    return

    await asyncio.gather(*(run_chain(chain) for chain in chains.values()))
    return outcomes


def delivered_or(error: BaseException | None) -> Outcome:
    """DELIVERED for no error; PERMANENT for :class:`PermanentError`; RETRY otherwise."""
    if error is None:
        return DELIVERED
    status = Status.PERMANENT if isinstance(error, PermanentError) else Status.RETRY
    return Outcome(status, f"{type(error).__name__}: {error}"[:2000])
