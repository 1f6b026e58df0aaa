"""A traffic generator that keeps the demo's orders service busy, and the service's
traffic events: every request it answers, written in batches by ``safeship.data``'s
``BatchWriter`` into ``demo_traffic_events``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from safeship.data import BatchStats, BatchWriter, BatchWriterClosedError

NAMES = ("ada", "grace", "linus", "barbara", "ken", "margaret", "guido", "radia")


def customer(rng: random.Random) -> str:
    """One of 400 customers, so percentage rollouts sticky on the customer spread evenly."""
    return f"{rng.choice(NAMES)}-{rng.randint(1, 50)}"


ITEMS = ("keyboard", "monitor", "cable", "laptop", "dock", "headset")


@dataclass(slots=True)
class TrafficStats:
    sent: int = 0
    errors: int = 0


async def generate_traffic(
    base_url: str,
    stop: asyncio.Event,
    *,
    rate: float = 20.0,
    seed: int | None = None,
    stats: TrafficStats | None = None,
) -> None:
    """Create and read orders at about ``rate`` requests per second until ``stop`` is set."""
    rng = random.Random(seed)
    stats = stats if stats is not None else TrafficStats()
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        while not stop.is_set():
            try:
                await _one_request(client, rng)
                stats.sent += 1
            except httpx.HTTPError:
                stats.errors += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rng.expovariate(rate))


async def _one_request(client: httpx.AsyncClient, rng: random.Random) -> None:
    roll = rng.random()
    if roll < 0.35:
        response = await client.get(f"/customers/{customer(rng)}/orders")
    elif roll < 0.7:
        body = {
            "customer": customer(rng),
            "item": rng.choice(ITEMS),
            "quantity": rng.randint(1, 5),
        }
        response = await client.post("/orders", json=body)
    else:
        response = await client.get("/orders", params={"limit": 10})
    if response.status_code >= 500:
        raise httpx.HTTPStatusError("server error", request=response.request, response=response)


# -- traffic events ---------------------------------------------------------------------

TRAFFIC_EVENTS = "demo_traffic_events"
_COLUMNS = ("at", "method", "route", "status", "duration_ms")


def traffic_events_table(metadata: sa.MetaData) -> sa.Table:
    """One row per request the orders service answered (the route's template, not its
    path: bounded, and no customer names)."""
    return sa.Table(
        TRAFFIC_EVENTS,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )


class TrafficEvents:
    """The orders service's requests as events, buffered and written in batches.

    Backpressure is ``drop``: a request never waits for the event log; when the buffer
    (``capacity`` rows) is full the event is dropped and counted
    (``safeship_data_batch_rows_total{writer="demo_traffic_events",outcome="dropped"}``).
    :meth:`close` writes what is still buffered (the demo calls it at shutdown)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_rows: int = 500,
        max_delay: float = 0.5,
        capacity: int = 10_000,
    ) -> None:
        metadata = sa.MetaData()
        self.table = traffic_events_table(metadata)
        metadata.create_all(engine)  # a demo table, not part of safeship's schema
        self.writer = BatchWriter(
            engine,
            self.table,
            backpressure="drop",
            columns=_COLUMNS,
            max_rows=max_rows,
            max_delay=max_delay,
            capacity=capacity,
            name=TRAFFIC_EVENTS,
        )

    def record(self, method: str, route: str, status: int, seconds: float) -> bool:
        """Buffer one event; ``False`` when it was dropped (buffer full)."""
        row = (datetime.now(UTC), method[:10], route[:200], status, round(seconds * 1000, 3))
        try:
            return self.writer.put(row)
        except BatchWriterClosedError:  # a request answered while the demo shuts down
            return False

    def middleware(self, app: Any) -> Any:
        """``app`` (ASGI) with each HTTP request it answers recorded as an event."""

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), 500

            async def sending(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                self.record(scope["method"], route, status, time.perf_counter() - started)

        return recorded

    @property
    def stats(self) -> BatchStats:
        return self.writer.stats

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking events and write the buffered ones."""
        self.writer.close(timeout)
