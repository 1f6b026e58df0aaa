"""A traffic generator that keeps the demo's orders service busy."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import httpx

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
