"""NATS JetStream sink: ``Nats-Msg-Id`` = event id (the stream drops duplicates inside its
duplicate window), every message's ack awaited, a whole batch in flight at once.

Needs ``pip install safeship[nats]``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from safeship.outbox.model import DELIVERED, Event, Outcome, Status
from safeship.outbox.sinks.base import Route, SinkUnavailableError

__all__ = ["NatsSink"]

_ACK_TIMEOUT = Outcome(Status.RETRY, "no JetStream ack before the timeout")
_NO_STREAM = Outcome(Status.RETRY, "no JetStream stream captures this subject (503)")


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as exc:
        raise ImportError("NatsSink needs nats-py: pip install safeship[nats]") from exc
    return nats


class NatsSink:
    """Publish to JetStream on ``subject(event)`` (default ``events.{aggregate_type}.{type}``).

    Pass ``url`` (the sink owns the connection) or an open ``client`` (you own it).
    """

    ordered = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        subject: Route | str = "events.{aggregate_type}.{type}",
        stream: str | None = None,
        ack_timeout: float = 5.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("NatsSink needs exactly one of url= or client=")
        if ack_timeout <= 0:
            raise ValueError("NatsSink ack_timeout must be > 0 seconds")
        self._url = url
        self._nc = client
        self._route = subject if isinstance(subject, Route) else Route(subject)
        self._stream = stream
        self._ack_timeout = ack_timeout
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._tokens = itertools.count()
        self._prefix = ""
        self._sub: Any = None
        self.duplicates = 0  # acks the stream flagged as duplicates (dropped by dedupe)

    async def open(self) -> None:
        if self._nc is None:
            nats = _import_nats()
            self._nc = await nats.connect(
                self._url,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
            )
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._url is not None and self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _on_ack(self, msg: Any) -> None:
        token = msg.subject[len(self._prefix) :].encode()
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            status = msg.headers.get("Status") if msg.headers else None
            future.set_result(b"503" if status == "503" else msg.data)

    def _headers(self, event: Event) -> dict[str, str]:
        headers = dict(event.headers)
        headers["Nats-Msg-Id"] = str(event.id)
        if self._stream is not None:
            headers["Nats-Expected-Stream"] = self._stream
        return headers

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise SinkUnavailableError("NATS is not connected")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []
        tokens: list[bytes] = []
        try:
            for event in events:
                token = str(next(self._tokens)).encode()
                future: asyncio.Future[bytes] = loop.create_future()
                self._pending[token] = future
                futures.append(future)
                tokens.append(token)
                await nc.publish(
                    self._route(event),
                    event.payload,
                    reply=self._prefix + token.decode(),
                    headers=self._headers(event),
                )
            await asyncio.wait(futures, timeout=self._ack_timeout)
        finally:
            for token in tokens:
                self._pending.pop(token, None)
        if not nc.is_connected and not any(f.done() for f in futures):
            raise SinkUnavailableError("NATS disconnected before any ack")
        outcomes = [_outcome(future) for future in futures]
        self.duplicates += sum(
            1
            for f in futures
            if f.done() and not f.cancelled() and b'"duplicate":true' in f.result()
        )
        return outcomes


def _outcome(future: asyncio.Future[bytes]) -> Outcome:
    if not future.done():
        future.cancel()
        return _ACK_TIMEOUT
    data = future.result()
    if data == b"503":
        return _NO_STREAM
    if b'"error"' in data:
        return Outcome(Status.RETRY, data.decode(errors="replace")[:2000])
    return DELIVERED
