"""Send many requests at once: each from its own connection, released together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

Send = Callable[[httpx.Client], httpx.Response]


def at_once(base_url: str, headers: dict[str, str], sends: Sequence[Send]) -> list[httpx.Response]:
    """Run every ``send`` on a connected client of its own, all released by one barrier."""
    clients = [httpx.Client(base_url=base_url, headers=headers, timeout=60) for _ in sends]
    for client in clients:  # connect first, so the barrier releases requests, not handshakes
        client.get("/health")
    barrier = threading.Barrier(len(sends))

    def run(pair: tuple[httpx.Client, Send]) -> httpx.Response:
        client, send = pair
        barrier.wait()
        return send(client)

    try:
        with ThreadPoolExecutor(max_workers=len(sends)) as pool:
            return list(pool.map(run, zip(clients, sends, strict=True)))
    finally:
        for client in clients:
            client.close()


def statuses(responses: Sequence[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


def described(responses: Sequence[httpx.Response]) -> list[tuple[int, str]]:
    """Each answer's status and the start of its body, for a failure message."""
    return [(r.status_code, r.text[:100]) for r in responses]
