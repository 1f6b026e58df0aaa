"""The sink contract, routing templates, and per-key dispatch for sinks without ordering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from safeship.errors import SafeshipError
from safeship.outbox._model import DELIVERED, SKIPPED, Event, Outcome, Status

__all__ = [
    "PermanentError",
    "Route",
    "Sink",
    "SinkUnavailableError",
    "publish_per_key",
]


class SinkUnavailableError(SafeshipError, ConnectionError):
    """The broker cannot take events now (unreachable, disconnected, not answering); the
    relay backs off without counting attempts.

    ``outcomes``, when given, holds one outcome per event of the batch as far as the sink
    got before the broker went away: what the broker confirmed is ``DELIVERED`` (the relay
    marks it delivered, so it is not published again), what it refused for good is
    ``PERMANENT``, and what was not tried or not confirmed is ``SKIPPED`` (left pending).
    """

    def __init__(self, message: str, *, outcomes: Sequence[Outcome] | None = None) -> None:
        super().__init__(message)
        self.outcomes = None if outcomes is None else list(outcomes)


class PermanentError(SafeshipError):
    """Raised by a callback (or a sink) for an event that will never be accepted."""


def error_text(error: BaseException) -> str:
    """``Type: message`` of an error, bounded for ``last_error``."""
    return f"{type(error).__name__}: {error}"[:2000]


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


_QUALIFIED = "{aggregate_type}.{type}"


@dataclass(frozen=True, slots=True)
class Route:
    """A topic, subject or routing key from a template such as ``"events.{aggregate_type}"``.

    Fields: ``aggregate_type``, ``type``, ``aggregate_id``. Where the template has
    ``{aggregate_type}.{type}`` and the type already starts with its aggregate type
    (``order.created`` of an ``order``), the type stands there alone: the default
    ``{aggregate_type}.{type}`` gives ``order.created``, never ``order.order.created``.
    """

    template: str = _QUALIFIED

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
        template, aggregate, kind = self.template, event.aggregate_type, event.type
        if kind.startswith(aggregate + ".") and _QUALIFIED in template:
            template = template.replace(_QUALIFIED, "{type}")
        return template.format(aggregate_type=aggregate, type=kind, aggregate_id=event.aggregate_id)


async def publish_per_key(
    events: Sequence[Event],
    send: Callable[[Event], Awaitable[Outcome]],
    *,
    concurrency: int = 32,
) -> list[Outcome]:
    """Send each key's events one after another (keys in parallel); after a key's first
    failure the rest of that key's events are SKIPPED, so order per key holds.

    ``send`` raising :class:`SinkUnavailableError` stops that key (its event stays SKIPPED);
    once every key is done the error is raised again, carrying the other keys' outcomes."""
    outcomes: list[Outcome] = [SKIPPED] * len(events)
    chains: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        chains.setdefault(event.aggregate_id, []).append(index)
    gate = asyncio.Semaphore(concurrency)
    unavailable: list[SinkUnavailableError] = []

    async def run_chain(indexes: list[int]) -> None:
        async with gate:
            for index in indexes:
                if unavailable:
                    return
                try:
                    outcome = await send(events[index])
                except SinkUnavailableError as exc:
                    unavailable.append(exc)
                    return
                outcomes[index] = outcome
                if outcome.status is not Status.DELIVERED:
                    return

    await asyncio.gather(*(run_chain(chain) for chain in chains.values()))
    if unavailable:
        raise SinkUnavailableError(str(unavailable[0]), outcomes=outcomes)
    return outcomes


def delivered_or(error: BaseException | None) -> Outcome:
    """DELIVERED for no error; PERMANENT for :class:`PermanentError`; RETRY otherwise
    (a :class:`SinkUnavailableError` is raised again: the whole sink is down)."""
    if error is None:
        return DELIVERED
    if isinstance(error, SinkUnavailableError):
        raise error
    status = Status.PERMANENT if isinstance(error, PermanentError) else Status.RETRY
    return Outcome(status, error_text(error))
