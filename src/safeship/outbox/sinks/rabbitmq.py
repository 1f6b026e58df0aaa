"""RabbitMQ sink (aio-pika): publisher confirms, persistent messages, ``message_id`` = event
id, and ``mandatory`` routing, so an unroutable event is a failure rather than silence.

Needs ``pip install safeship[rabbitmq]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from safeship.outbox._model import DELIVERED, SKIPPED, Event, Outcome, Status
from safeship.outbox.sinks._base import Route, SinkUnavailableError, error_text

__all__ = ["RabbitMQSink"]

#: RabbitMQ's default ``max_message_size`` (128 MiB); larger bodies close the channel.
DEFAULT_MAX_MESSAGE_BYTES = 134_217_728


def _import_aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:
        raise ImportError("RabbitMQSink needs aio-pika: pip install safeship[rabbitmq]") from exc
    return aio_pika


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors about the channel or connection, not the message."""
    from aiormq import exceptions

    return (
        OSError,
        TimeoutError,
        ConnectionError,
        exceptions.AMQPConnectionError,
        exceptions.ChannelInvalidStateError,
        exceptions.ChannelClosed,
        exceptions.ConnectionClosed,
    )


class RabbitMQSink:
    """Publish to ``exchange`` (default: the default exchange) with routing key
    ``routing_key(event)`` (default ``{aggregate_type}.{type}``).

    ``connect_timeout`` bounds :meth:`open`.  A message the broker can never take (a body
    over ``max_message_bytes``, which must not exceed the broker's ``max_message_size``;
    properties AMQP cannot encode) is a ``PERMANENT`` outcome for that event alone; a
    closed channel or connection is the broker being unavailable.
    """

    ordered = True

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: Route | str = "{aggregate_type}.{type}",
        confirm_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if confirm_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("RabbitMQSink confirm_timeout and connect_timeout must be > 0 s")
        if max_message_bytes < 1:
            raise ValueError("RabbitMQSink max_message_bytes must be >= 1")
        self._url = url
        self._exchange_name = exchange
        self._route = routing_key if isinstance(routing_key, Route) else Route(routing_key)
        self._timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._max_bytes = max_message_bytes
        self._connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None

    def __repr__(self) -> str:
        return "RabbitMQSink()"

    async def open(self) -> None:
        aio_pika = _import_aio_pika()
        from aio_pika.connection import make_url

        connection = aio_pika.RobustConnection(make_url(self._url))
        try:
            await asyncio.wait_for(
                connection.connect(timeout=self._connect_timeout), self._connect_timeout
            )
        except BaseException as exc:
            # Closing stops the robust connection's own reconnect task, which would
            # otherwise outlive this attempt (and keep the event loop from finishing).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 1.0)
            if isinstance(exc, TimeoutError | OSError):
                raise SinkUnavailableError(
                    f"RabbitMQ did not connect within {self._connect_timeout}s: {error_text(exc)}"
                ) from exc
            raise
        self._connection = connection
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

    async def _send(self, event: Event) -> Any:
        if len(event.payload) > self._max_bytes:
            raise _Refused(
                f"body is {len(event.payload)} bytes, over max_message_bytes {self._max_bytes}"
            )
        try:
            message = self._message(event)
        except (TypeError, ValueError) as exc:
            raise _Refused(error_text(exc)) from exc
        return await self._exchange.publish(
            message, self._route(event), mandatory=True, timeout=self._timeout
        )

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        if self._channel is None or self._channel.is_closed:
            raise SinkUnavailableError("RabbitMQ channel is not open")
        results = await asyncio.gather(
            *(self._send(event) for event in events), return_exceptions=True
        )
        unavailable = _unavailable_errors()
        outcomes = [_outcome(r, unavailable) for r in results]
        lost = [r for r in results if isinstance(r, unavailable)]
        if lost:
            raise SinkUnavailableError(
                f"RabbitMQ channel or connection lost: {error_text(lost[0])}", outcomes=outcomes
            )
        return outcomes


class _Refused(Exception):  # noqa: N818 - internal marker: a message RabbitMQ cannot take
    pass


def _outcome(result: object, unavailable: tuple[type[BaseException], ...]) -> Outcome:
    if not isinstance(result, BaseException):
        return DELIVERED
    if isinstance(result, unavailable):
        return SKIPPED  # not the event's fault: left pending, no attempt counted
    if isinstance(result, _Refused):
        return Outcome(Status.PERMANENT, f"RabbitMQ cannot take the event: {result}"[:2000])
    name = type(result).__name__
    if name in ("DeliveryError", "PublishError"):  # returned unroutable, or nacked
        return Outcome(Status.RETRY, f"not routed or nacked by RabbitMQ: {result}"[:2000])
    return Outcome(Status.RETRY, error_text(result))
