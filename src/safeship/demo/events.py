"""The demo's events: every order stages ``order.created`` in its own transaction, and a relay
delivers them — to an in-process consumer, or to NATS JetStream when ``--broker`` is given.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import sqlalchemy as sa

from safeship.outbox import CallbackSink, Event, Relay, RelayConfig, RelayThread, Sink

DEMO_STREAM = "SAFESHIP_DEMO"
DEMO_SUBJECTS = "events.>"


@dataclass
class DeliveredEvents:
    """What the in-process consumer received (a stand-in for a downstream service)."""

    count: int = 0
    last_order: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def receive(self, event: Event) -> None:
        with self._lock:
            self.count += 1
            self.last_order = event.aggregate_id


def _ensure_stream(url: str) -> None:
    """Create the JetStream stream the demo publishes into, if it does not exist."""
    import nats

    parts = urlsplit(url)
    # nats-py retries a refused first connection for a long time: check the port first.
    socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 3).close()

    async def create() -> None:
        nc = await nats.connect(
            url, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
        )
        try:
            js = nc.jetstream()
            try:
                await js.stream_info(DEMO_STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(name=DEMO_STREAM, subjects=[DEMO_SUBJECTS])
        finally:
            await nc.close()

    asyncio.run(create())


def start_relay(
    engine: sa.Engine, *, broker_url: str | None, delivered: DeliveredEvents
) -> RelayThread:
    """Run a relay in a background thread; stop it with ``.stop()``."""
    sink: Sink
    if broker_url:
        from safeship.outbox.sinks.nats import NatsSink

        try:
            _ensure_stream(broker_url)
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise OSError(
                f"cannot use the broker at {broker_url}: {exc or type(exc).__name__}"
            ) from None
        sink = NatsSink(broker_url, stream=DEMO_STREAM)
    else:
        sink = CallbackSink(delivered.receive)
    config = RelayConfig(poll_interval=0.2, lease_ttl=2.0)
    return Relay(engine, sink, config=config).start_thread()
