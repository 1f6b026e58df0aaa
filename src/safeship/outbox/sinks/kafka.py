"""Kafka sink (aiokafka): idempotent producer (``acks=all``), message key = aggregate id,
so one key stays in one Kafka partition and in order; header ``id`` = event id.

Needs ``pip install safeship[kafka]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from safeship.outbox._model import DELIVERED, SKIPPED, Event, Outcome, Status
from safeship.outbox.sinks._base import Route, SinkUnavailableError, error_text

__all__ = ["KafkaSink"]

_TOO_LARGE = ("MessageSizeTooLargeError", "RecordListTooLargeError")
_UNAVAILABLE = ("KafkaConnectionError", "KafkaTimeoutError", "RequestTimedOutError")


def _classify(error: BaseException) -> Outcome:
    """PERMANENT for a record Kafka can never take, SKIPPED (the broker is unavailable)
    for connection errors and timeouts, RETRY otherwise."""
    name = type(error).__name__
    if name in _TOO_LARGE or isinstance(error, TypeError | ValueError):
        return Outcome(Status.PERMANENT, f"Kafka cannot take the event: {error_text(error)}")
    if name in _UNAVAILABLE or isinstance(error, OSError | TimeoutError):
        return SKIPPED
    return Outcome(Status.RETRY, error_text(error))


class KafkaSink:
    """Produce to topic ``topic(event)`` (default ``{aggregate_type}``).

    ``connect_timeout`` bounds :meth:`open` (bootstrap) and the producer's requests.  A
    record too large for the producer or the broker is a ``PERMANENT`` outcome for that
    event alone; connection errors and timeouts are the broker being unavailable.
    """

    ordered = True

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: Route | str = "{aggregate_type}",
        connect_timeout: float = 10.0,
    ) -> None:
        if connect_timeout <= 0:
            raise ValueError("KafkaSink connect_timeout must be > 0 seconds")
        self._servers = bootstrap_servers
        self._route = topic if isinstance(topic, Route) else Route(topic)
        self._connect_timeout = connect_timeout
        self._producer: Any = None

    async def open(self) -> None:
        try:
            from aiokafka import AIOKafkaProducer
        except ImportError as exc:
            raise ImportError("KafkaSink needs aiokafka: pip install safeship[kafka]") from exc
        producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=int(self._connect_timeout * 1000),
        )
        try:
            await asyncio.wait_for(producer.start(), self._connect_timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2.0)
            if isinstance(exc, Exception):
                raise SinkUnavailableError(
                    f"Kafka at {self._servers} did not connect within "
                    f"{self._connect_timeout}s: {error_text(exc)}"
                ) from exc
            raise
        self._producer = producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        if self._producer is None:
            raise SinkUnavailableError("KafkaSink is not open")
        outcomes: list[Outcome] = [SKIPPED] * len(events)
        futures: dict[int, Any] = {}
        refused: set[str] = set()
        lost: BaseException | None = None
        for index, event in enumerate(events):
            if event.aggregate_id in refused:
                continue
            try:
                futures[index] = await self._producer.send(
                    self._route(event),
                    event.payload,
                    key=event.aggregate_id.encode(),
                    headers=_headers(event),
                )
            except Exception as exc:  # noqa: BLE001 - classified: this event or the broker
                outcome = _classify(exc)
                if outcome is SKIPPED:
                    lost = exc
                    break
                outcomes[index] = outcome
                refused.add(event.aggregate_id)
        results = await asyncio.gather(*futures.values(), return_exceptions=True)
        for index, result in zip(futures, results, strict=True):
            outcome = DELIVERED if not isinstance(result, BaseException) else _classify(result)
            outcomes[index] = outcome
            if outcome is SKIPPED and lost is None:
                lost = result
        if lost is not None:
            raise SinkUnavailableError(f"Kafka unavailable: {error_text(lost)}", outcomes=outcomes)
        return outcomes


def _headers(event: Event) -> list[tuple[str, bytes]]:
    headers = [("id", str(event.id).encode()), ("type", event.type.encode())]
    return headers + [(k, v.encode()) for k, v in event.headers.items()]
