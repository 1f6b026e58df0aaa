"""In-process sink: call a function per event (the embedded demo and tests use it)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from safeship.outbox._model import Event, Outcome
from safeship.outbox.sinks._base import delivered_or, publish_per_key

__all__ = ["CallbackSink"]

Handler = Callable[[Event], None] | Callable[[Event], Awaitable[None]]


class CallbackSink:
    """Deliver each event to ``handler(event)`` (sync or async), in order per key.

    Raising :class:`~safeship.outbox.sinks.PermanentError` dead-letters the event at once;
    any other exception retries it with backoff.
    """

    ordered = False

    def __init__(self, handler: Handler, *, concurrency: int = 1) -> None:
        if not callable(handler):
            raise TypeError("CallbackSink needs a callable handler(event)")
        if concurrency < 1:
            raise ValueError("CallbackSink concurrency must be >= 1")
        self._handler = handler
        self._concurrency = concurrency

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _send(self, event: Event) -> Outcome:
        try:
            result = self._handler(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - every handler error becomes an outcome
            return delivered_or(exc)
        return delivered_or(None)

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        return await publish_per_key(events, self._send, concurrency=self._concurrency)
