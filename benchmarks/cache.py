"""Memoizing caches: hit cost and stampede behaviour, safeship against its peers, in one run.

Prints one JSON line per measurement::

    {"bench": "cache", "case": ..., "impl": ..., "value": ..., "unit": ...}

Cases: ``hit-memory-async`` (ns per hit of a decorated async function; safeship,
async-lru, cashews, aiocache), ``hit-memory-sync`` (decorated sync function; safeship,
cachetools, dogpile), ``hit-redis`` (ns per hit served by Redis; safeship with
``memory=False``, cashews, aiocache), ``stampede-calls`` (loader calls made by 200
concurrent callers missing one key, 50 ms loader, one process; unit ``count``) and
``stampede-xproc-calls`` (the same in two processes at once, through Redis). ``value`` of a
hit case is the median over repeats; ``baseline`` is the undecorated call. ``--quick``
keeps the run under a minute with the same cases; ``--case`` (repeatable) runs only the
named cases. ``--redis-hits IMPL N`` makes 200 warm-up hits of the ``hit-redis`` function
of IMPL, then N more, and prints nothing: for instruction counts, as the difference of two
runs::

    PYTHONHASHSEED=0 valgrind --tool=callgrind python benchmarks/cache.py --redis-hits safeship 0
    PYTHONHASHSEED=0 valgrind --tool=callgrind python benchmarks/cache.py --redis-hits safeship 4000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

REDIS_URL = os.environ.get("SAFESHIP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
LOADER_SECONDS = 0.05
CALLERS = 200
CASES = ("hit-memory-sync", "hit-memory-async", "hit-redis", "stampede-calls",
         "stampede-xproc-calls")  # fmt: skip


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": "cache", "case": case, "impl": impl, "value": round(value, 1), "unit": unit}
    print(json.dumps(line), flush=True)


def time_sync(impls: Mapping[str, Callable[[], Any]], n: int, repeats: int) -> dict[str, float]:
    """Median ns per call of each impl, the impls taking turns in every repeat (so a noisy
    neighbour slows them alike)."""
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    for fn in impls.values():
        fn()
    for _ in range(repeats):
        for impl, fn in impls.items():
            started = time.perf_counter()
            for _ in range(n):
                fn()
            samples[impl].append((time.perf_counter() - started) / n * 1e9)
    return {impl: statistics.median(values) for impl, values in samples.items()}


async def time_async(
    impls: Mapping[str, Callable[[], Awaitable[Any]]], n: int, repeats: int
) -> dict[str, float]:
    """The async twin of :func:`time_sync`."""
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    for fn in impls.values():
        await fn()
    for _ in range(repeats):
        for impl, fn in impls.items():
            started = time.perf_counter()
            for _ in range(n):
                await fn()
            samples[impl].append((time.perf_counter() - started) / n * 1e9)
    return {impl: statistics.median(values) for impl, values in samples.items()}


# -- decorated functions, one per impl ----------------------------------------------------
def memory_async_impls() -> dict[str, Callable[[int], Awaitable[int]]]:
    import aiocache
    from async_lru import alru_cache
    from cashews import Cache as CashewsCache

    from safeship.cache import Cache

    async def baseline(x: int) -> int:
        return x

    ours = Cache("bench-async")
    cashews = CashewsCache()
    cashews.setup("mem://")

    @ours(ttl=600)
    async def safeship_fn(x: int) -> int:
        return x

    @alru_cache(maxsize=10_000)
    async def alru_fn(x: int) -> int:
        return x

    @cashews(ttl="10m")
    async def cashews_fn(x: int) -> int:
        return x

    @aiocache.cached(ttl=600)
    async def aiocache_fn(x: int) -> int:
        return x

    return {"baseline": baseline, "safeship": safeship_fn, "async-lru": alru_fn,
            "cashews": cashews_fn, "aiocache": aiocache_fn}  # fmt: skip


def memory_sync_impls() -> dict[str, Callable[[int], int]]:
    import cachetools
    from dogpile.cache import make_region

    from safeship.cache import Cache

    def baseline(x: int) -> int:
        return x

    ours = Cache("bench-sync")
    region = make_region().configure("dogpile.cache.memory", expiration_time=600)

    @ours(ttl=600)
    def safeship_fn(x: int) -> int:
        return x

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=600))
    def cachetools_fn(x: int) -> int:
        return x

    @region.cache_on_arguments()
    def dogpile_fn(x: int) -> int:
        return x

    return {"baseline": baseline, "safeship": safeship_fn, "cachetools": cachetools_fn,
            "dogpile": dogpile_fn}  # fmt: skip


def redis_impls(prefix: str) -> tuple[dict[str, Callable[[int], Awaitable[int]]], list[Any]]:
    import aiocache
    from aiocache.serializers import PickleSerializer
    from cashews import Cache as CashewsCache

    from safeship.cache import Cache

    ours = Cache(prefix, redis_url=REDIS_URL, memory=False)
    cashews = CashewsCache()
    cashews.setup(REDIS_URL)
    host_port, _, db = REDIS_URL.removeprefix("redis://").partition("/")
    host, _, port = host_port.partition(":")

    @ours(ttl=600)
    async def safeship_fn(x: int) -> int:
        return x

    @cashews(ttl="10m", prefix=prefix + "cashews")
    async def cashews_fn(x: int) -> int:
        return x

    @aiocache.cached(
        ttl=600, cache=aiocache.RedisCache, endpoint=host, port=int(port), db=int(db or 0),
        namespace=prefix + "aio", serializer=PickleSerializer(),
    )  # fmt: skip
    async def aiocache_fn(x: int) -> int:
        return x

    functions = {"safeship": safeship_fn, "cashews": cashews_fn, "aiocache": aiocache_fn}
    return functions, [ours, cashews, aiocache_fn.cache]


# -- stampedes ---------------------------------------------------------------------------
def stampede_impls(prefix: str, *, redis: bool) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Decorated 50 ms loaders; each increments a counter in Redis when it runs."""
    import aiocache
    import redis.asyncio as aredis
    from cashews import Cache as CashewsCache

    from safeship.cache import Cache

    counter = aredis.Redis(
        connection_pool=aredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=8)
    )

    def loader(impl: str) -> Callable[[int], Awaitable[int]]:
        async def load(x: int) -> int:
            await counter.incr(f"{prefix}:{impl}:calls")
            await asyncio.sleep(LOADER_SECONDS)
            return x

        return load

    ours = Cache(prefix, redis_url=REDIS_URL) if redis else Cache(prefix)
    cashews = CashewsCache()
    cashews.setup(REDIS_URL if redis else "mem://")
    safeship_fn = ours(ttl=600)(loader("safeship"))
    cashews_fn = cashews(ttl="10m", lock=True, prefix=prefix + "c")(loader("cashews"))
    impls: dict[str, Callable[[], Awaitable[Any]]] = {
        "safeship": lambda: safeship_fn(1),
        "cashews": lambda: cashews_fn(1),
    }
    if not redis:
        aiocache_fn = aiocache.cached(ttl=600)(loader("aiocache"))
        impls["aiocache"] = lambda: aiocache_fn(1)
    return impls


async def calls_made(prefix: str, impl: str) -> int:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(REDIS_URL)
    try:
        return int(await client.get(f"{prefix}:{impl}:calls") or 0)
    finally:
        await client.aclose()


async def stampede_once(prefix: str, impl: str, *, redis: bool) -> None:
    call = stampede_impls(prefix, redis=redis)[impl]
    await asyncio.gather(*(call() for _ in range(CALLERS)))


def xproc_worker(prefix: str, impl: str) -> None:
    """One of the two processes of ``stampede-xproc-calls``: waits for go, then stampedes."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(REDIS_URL)
    print("ready", flush=True)
    client.blpop([f"{prefix}:{impl}:go"], timeout=30)
    asyncio.run(stampede_once(prefix, impl, redis=True))
    print("done", flush=True)


def stampede_xproc(impl: str) -> int:
    import redis as sync_redis

    prefix = "bench" + uuid.uuid4().hex[:8]
    command = [sys.executable, __file__, "--xproc-worker", prefix, impl]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    client = sync_redis.Redis.from_url(REDIS_URL)
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        client.rpush(f"{prefix}:{impl}:go", "go", "go")
        for worker in workers:
            worker.communicate(timeout=60)
        return int(client.get(f"{prefix}:{impl}:calls") or 0)
    finally:
        for worker in workers:
            worker.kill()
        client.close()


async def redis_hits(impl: str, n: int) -> None:
    """``--redis-hits``: the hits alone, for callgrind (see the module docstring)."""
    functions, closers = redis_impls("bench" + uuid.uuid4().hex[:8])
    fn = functions[impl]
    for _ in range(200):
        await fn(1)
    for _ in range(n):
        await fn(1)
    for closer in closers:
        close = getattr(closer, "aclose", None) or closer.close
        await close()


# -- main ---------------------------------------------------------------------------------
async def run_async_cases(n: int, repeats: int, cases: set[str]) -> None:
    if "hit-memory-async" in cases:
        calls = {impl: functools.partial(fn, 1) for impl, fn in memory_async_impls().items()}
        for impl, value in (await time_async(calls, n, repeats)).items():
            emit("hit-memory-async", impl, value, "ns/call")
    prefix = "bench" + uuid.uuid4().hex[:8]
    if "hit-redis" in cases:
        functions, closers = redis_impls(prefix)
        calls = {impl: functools.partial(fn, 1) for impl, fn in functions.items()}
        for impl, value in (await time_async(calls, max(200, n // 50), repeats)).items():
            emit("hit-redis", impl, value, "ns/call")
        for closer in closers:
            close = getattr(closer, "aclose", None) or closer.close
            await close()
    if "stampede-calls" in cases:
        for impl in ("safeship", "cashews", "aiocache"):
            await stampede_once(prefix, impl, redis=False)
            emit("stampede-calls", impl, await calls_made(prefix, impl), "count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--case", action="append", choices=CASES, help="run only this case")
    parser.add_argument("--xproc-worker", nargs=2, metavar=("PREFIX", "IMPL"))
    parser.add_argument("--redis-hits", nargs=2, metavar=("IMPL", "N"))
    options = parser.parse_args()
    warnings.simplefilter("ignore")  # peers' deprecation warnings are not the measurement
    if options.redis_hits:
        impl, count = options.redis_hits
        asyncio.run(redis_hits(impl, int(count)))
        return
    if options.xproc_worker:
        xproc_worker(*options.xproc_worker)
        return
    cases = set(options.case or CASES)
    n, repeats = (20_000, 5) if options.quick else (200_000, 7)
    if "hit-memory-sync" in cases:
        sync_calls = {impl: functools.partial(fn, 1) for impl, fn in memory_sync_impls().items()}
        for impl, value in time_sync(sync_calls, n, repeats).items():
            emit("hit-memory-sync", impl, value, "ns/call")
    asyncio.run(run_async_cases(n, repeats, cases))
    if "stampede-xproc-calls" in cases:
        for impl in ("safeship", "cashews"):
            emit("stampede-xproc-calls", impl, stampede_xproc(impl), "count")


if __name__ == "__main__":
    main()
