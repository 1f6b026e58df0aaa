"""Kafka sink (aiokafka): idempotent producer (``acks=all``), message key = aggregate id,
so one key stays in one Kafka partition and in order; header ``id`` = event id.

Needs ``pip install safeship[kafka]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from safeship.outbox.model import DELIVERED, Event, Outcome, Status
from safeship.outbox.sinks.base import Route, SinkUnavailableError

__all__ = ["KafkaSink"]


class KafkaSink:
    """Produce to topic ``topic(event)`` (default ``{aggregate_type}``)."""

    ordered = True

    def __init__(self, bootstrap_servers: str, *, topic: Route | str = "{aggregate_type}") -> None:
        self._servers = bootstrap_servers
        self._route = topic if isinstance(topic, Route) else Route(topic)
        self._producer: Any = None

    async def open(self) -> None:
        try:
            from aiokafka import AIOKafkaProducer
        except ImportError as exc:
            raise ImportError("KafkaSink needs aiokafka: pip install safeship[kafka]") from exc
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._servers, enable_idempotence=True, acks="all"
        )
        await self._producer.start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        if self._producer is None:
            raise SinkUnavailableError("KafkaSink is not open")
        futures = []
        for event in events:
            headers = [("id", str(event.id).encode()), ("type", event.type.encode())]
            headers += [(k, v.encode()) for k, v in event.headers.items()]
            futures.append(
                await self._producer.send(
                    self._route(event),
                    event.payload,
                    key=event.aggregate_id.encode(),
                    headers=headers,
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [
            Outcome(Status.RETRY, repr(r)[:2000]) if isinstance(r, BaseException) else DELIVERED
            for r in results
        ]
