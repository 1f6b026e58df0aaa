"""RabbitMQ sink (aio-pika): publisher confirms, persistent messages, ``message_id`` = event
id, and ``mandatory`` routing, so an unroutable event is a failure rather than silence.

Needs ``pip install safeship[rabbitmq]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from safeship.outbox.model import DELIVERED, Event, Outcome, Status
from safeship.outbox.sinks.base import Route, SinkUnavailableError

__all__ = ["RabbitMQSink"]


def _import_aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:
        raise ImportError("RabbitMQSink needs aio-pika: pip install safeship[rabbitmq]") from exc
    return aio_pika


class RabbitMQSink:
    """Publish to ``exchange`` (default: the default exchange) with routing key
    ``routing_key(event)`` (default ``{aggregate_type}.{type}``)."""

    ordered = True

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: Route | str = "{aggregate_type}.{type}",
        confirm_timeout: float = 5.0,
    ) -> None:
        if confirm_timeout <= 0:
            raise ValueError("RabbitMQSink confirm_timeout must be > 0 seconds")
        self._url = url
        self._exchange_name = exchange
        self._route = routing_key if isinstance(routing_key, Route) else Route(routing_key)
        self._timeout = confirm_timeout
        self._connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None

    async def open(self) -> None:
        aio_pika = _import_aio_pika()
        self._connection = await aio_pika.connect_robust(self._url, timeout=5)
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        if self._exchange_name:
            self._exchange = await self._channel.get_exchange(self._exchange_name)
        else:
            self._exchange = self._channel.default_exchange

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def _message(self, event: Event) -> Any:
        aio_pika = _import_aio_pika()
        return aio_pika.Message(
            event.payload,
            message_id=str(event.id),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            type=event.type,
            headers={
                **event.headers,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
            },
        )

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        if self._channel is None or self._channel.is_closed:
            raise SinkUnavailableError("RabbitMQ channel is not open")
        sends = [
            self._exchange.publish(
                self._message(event), self._route(event), mandatory=True, timeout=self._timeout
            )
            for event in events
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        if all(isinstance(r, BaseException) for r in results) and self._channel.is_closed:
            raise SinkUnavailableError("RabbitMQ channel closed during the batch")
        return [_outcome(result) for result in results]


def _outcome(result: object) -> Outcome:
    if not isinstance(result, BaseException):
        return DELIVERED
    name = type(result).__name__
    if name in ("DeliveryError", "PublishError"):  # returned unroutable, or nacked
        return Outcome(Status.RETRY, f"not routed or nacked by RabbitMQ: {result}"[:2000])
    return Outcome(Status.RETRY, f"{name}: {result}"[:2000])
