"""Redis Streams sink (redis-py): ``XADD`` with a bounded, approximately trimmed length,
one pipeline per batch.  Redis has no dedupe: consumers should use the inbox with the
``id`` field.

Needs ``pip install safeship[redis]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from safeship.outbox._model import DELIVERED, SKIPPED, Event, Outcome, Status
from safeship.outbox.sinks._base import Route, SinkUnavailableError, error_text

__all__ = ["RedisStreamSink"]


class RedisStreamSink:
    """Append each event to the stream ``stream(event)`` (default ``events:{aggregate_type}``)
    with fields ``id``, ``aggregate_type``, ``aggregate_id``, ``type``, ``payload``,
    ``headers``.

    An error reply for one entry (e.g. ``WRONGTYPE``) counts against that event; a reply
    about the server's state (``OOM``, ``LOADING``, ``READONLY``, ...) and a lost
    connection are the broker being unavailable.  The client's socket timeouts bound
    connecting and each round trip."""

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
        from redis import exceptions

        outcomes: list[Outcome] = [SKIPPED] * len(events)
        pipe = self._client.pipeline(transaction=False)
        queued: list[int] = []
        for index, event in enumerate(events):
            try:
                fields = self._fields(event)
            except (TypeError, ValueError) as exc:  # cannot be encoded: this event only
                outcomes[index] = Outcome(Status.PERMANENT, error_text(exc))
                continue
            pipe.xadd(self._route(event), fields, maxlen=self._maxlen, approximate=True)
            queued.append(index)
        if not queued:
            return outcomes
        try:
            results = await pipe.execute(raise_on_error=False)
        except (exceptions.ConnectionError, exceptions.TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"Redis unavailable: {exc}", outcomes=outcomes) from exc
        for index, result in zip(queued, results, strict=True):
            outcomes[index] = _outcome(result)
        if any(o is _SERVER_DOWN for o in outcomes):
            state = next(r for r in results if _server_state(r))
            lost = [SKIPPED if o is _SERVER_DOWN else o for o in outcomes]
            raise SinkUnavailableError(f"Redis cannot take writes: {state}", outcomes=lost)
        return outcomes


#: Error replies about the server's state, not the command: every write would fail.
_SERVER_STATES = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
_SERVER_DOWN = Outcome(Status.SKIPPED, "redis server state")


def _server_state(result: object) -> bool:
    return isinstance(result, BaseException) and str(result).startswith(_SERVER_STATES)


def _outcome(result: object) -> Outcome:
    if not isinstance(result, BaseException):
        return DELIVERED
    if _server_state(result):
        return _SERVER_DOWN
    return Outcome(Status.RETRY, error_text(result))
