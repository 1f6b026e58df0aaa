"""Redis Streams sink (redis-py): ``XADD`` with a bounded, approximately trimmed length,
one pipeline per batch.  Redis has no dedupe: consumers should use the inbox with the
``id`` field.

Needs ``pip install safeship[redis]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from safeship.outbox.model import DELIVERED, Event, Outcome, Status
from safeship.outbox.sinks.base import Route, SinkUnavailableError

__all__ = ["RedisStreamSink"]


class RedisStreamSink:
    """Append each event to the stream ``stream(event)`` (default ``events:{aggregate_type}``)
    with fields ``id``, ``aggregate_type``, ``aggregate_id``, ``type``, ``payload``,
    ``headers``."""

    ordered = True

    def __init__(
        self,
        url: str,
        *,
        stream: Route | str = "events:{aggregate_type}",
        maxlen: int = 1_000_000,
    ) -> None:
        if maxlen < 1:
            raise ValueError("RedisStreamSink maxlen must be >= 1")
        self._url = url
        self._route = stream if isinstance(stream, Route) else Route(stream)
        self._maxlen = maxlen
        self._client: Any = None

    async def open(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:
            raise ImportError("RedisStreamSink needs redis: pip install safeship[redis]") from exc
        self._client = aioredis.Redis.from_url(
            self._url, socket_timeout=5, socket_connect_timeout=2
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _fields(self, event: Event) -> dict[str, Any]:
        return {
            "id": str(event.id),
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "type": event.type,
            "payload": event.payload,
            "headers": json.dumps(dict(event.headers)),
        }

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        if self._client is None:
            raise SinkUnavailableError("RedisStreamSink is not open")
        pipe = self._client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(
                self._route(event), self._fields(event), maxlen=self._maxlen, approximate=True
            )
        try:
            results = await pipe.execute(raise_on_error=False)
        except (ConnectionError, OSError) as exc:
            raise SinkUnavailableError(f"Redis unavailable: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise SinkUnavailableError(f"Redis unavailable: {exc}") from exc
            raise
        return [
            Outcome(Status.RETRY, repr(r)[:2000]) if isinstance(r, BaseException) else DELIVERED
            for r in results
        ]
