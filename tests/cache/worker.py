"""A second process for the cross-process cache tests (run as ``python -m tests.cache.worker``).

``stampede NS URL [LEASE_TTL LOAD_SECONDS]``: 200 concurrent calls of one loader (50 ms
unless given, a lease of 10 s unless given) once the test says go; prints the results.
``watch NS URL``: caches ``product(1)`` and a marker, then for each line on stdin waits
until the marker has been invalidated (messages on the channel are ordered, so any
invalidation sent before the marker has arrived too), calls ``product(1)`` again and
prints what it returned.
"""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aredis

from safeship.cache import Cache


async def stampede(namespace: str, url: str, lease_ttl: str = "10", load: str = "0.05") -> None:
    counter = aredis.Redis.from_url(url)
    cache = Cache(namespace, redis_url=url, lease_ttl=float(lease_ttl), lock_timeout=30.0)
    await cache.start()

    @cache(ttl=60)
    async def slow(pk: int) -> int:
        await counter.incr(f"{namespace}:loads")
        await asyncio.sleep(float(load))
        return pk * 10

    print("ready", flush=True)
    await counter.blpop([f"{namespace}:go"], timeout=30)
    results = await asyncio.gather(*(slow(4) for _ in range(200)))
    print(json.dumps({"results": sorted(set(results)), "stats": cache.snapshot()}), flush=True)
    await counter.aclose()
    await cache.aclose()


async def watch(namespace: str, url: str) -> None:
    counter = aredis.Redis.from_url(url)
    cache = Cache(namespace, redis_url=url)
    await cache.start()

    @cache(ttl=60, tags=["product:{pk}"])
    async def product(pk: int) -> int:
        return int(await counter.incr(f"{namespace}:version"))

    @cache(ttl=60, tags=["marker"])
    async def marker() -> int:
        return 0

    print(json.dumps({"value": await product(1)}), flush=True)
    await marker()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() != "next":
            break
        for _ in range(1000):
            if marker.key() not in cache.memory._by_key:  # type: ignore[union-attr, attr-defined]
                break
            await asyncio.sleep(0.01)
        value = await product(1)
        await marker()
        print(json.dumps({"value": value}), flush=True)
    await counter.aclose()
    await cache.aclose()


if __name__ == "__main__":
    mode, namespace, url, *extra = sys.argv[1:]
    asyncio.run({"stampede": stampede, "watch": watch}[mode](namespace, url, *extra))
