"""Per-call overhead of resilience policies: safeship against its peers, in one run.

Prints one JSON line per measurement::

    {"bench": "resilience", "case": ..., "impl": ..., "value": ..., "unit": "ns/call"}

``value`` is the median, over repeats, of the time per call of a trivial function
wrapped by ``impl`` (``baseline`` is the unwrapped call, so overhead = value − baseline).

Cases: ``breaker-sync`` (safeship with a time-based window), ``breaker-async``,
``breaker-open-reject`` (rejecting while open, exception caught by the caller),
``retry-sync`` and ``retry-async`` (no failure), ``pipeline-async`` (safeship's
retry + breaker + timeout against ``asyncio.timeout`` alone around the same call), plus
``breaker-open-reject-retained`` (bytes still allocated after the rejections, unit
``count``). ``--quick`` keeps the whole run under a minute with the same cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
import stamina
import tenacity

from safeship.resilience import Breaker, Retry, Timeout, TimeWindow, pipeline

Sync = Callable[[], Any]
Async = Callable[[], Awaitable[Any]]


class FailureError(Exception):
    """What the dependency raises when we trip a breaker."""


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def fail() -> None:
    raise FailureError


async def afail() -> None:
    raise FailureError


def emit(case: str, impl: str, value: float, unit: str = "ns/call") -> None:
    line = {
        "bench": "resilience",
        "case": case,
        "impl": impl,
        "value": round(value, 1),
        "unit": unit,
    }
    print(json.dumps(line), flush=True)


# -- timing ----------------------------------------------------------------------------


def _loop_sync(call: Sync, n: int, catch: bool) -> float:
    started = time.perf_counter()
    if catch:
        for _ in range(n):
            try:  # noqa: SIM105 - what callers write; suppress() would add its own cost
                call()
            except Exception:  # noqa: BLE001, S110 - each peer raises its own rejection type
                pass
    else:
        for _ in range(n):
            call()
    return time.perf_counter() - started


async def _loop_async(call: Async, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


def _size_sync(call: Sync, budget: float, catch: bool) -> int:
    probe = max(_loop_sync(call, 200, catch), 1e-9) / 200
    n = max(1_000, int(budget / probe))
    _loop_sync(call, n // 10, catch)  # warm up
    return n


def measure_sync(
    case: str, contenders: dict[str, Sync], repeats: int, budget: float, catch: bool = False
) -> None:
    """Emit each contender's median ns per call; repeats interleave the contenders so
    that load from other processes hits them all alike."""
    sizes = {impl: _size_sync(call, budget, catch) for impl, call in contenders.items()}
    samples: dict[str, list[float]] = {impl: [] for impl in contenders}
    for _ in range(repeats):
        for impl, call in contenders.items():
            gc.collect()
            samples[impl].append(_loop_sync(call, sizes[impl], catch) / sizes[impl] * 1e9)
    for impl, values in samples.items():
        emit(case, impl, statistics.median(values))


def measure_async(case: str, contenders: dict[str, Async], repeats: int, budget: float) -> None:
    """The async twin of :func:`measure_sync` (one event loop for the whole case)."""

    async def run() -> dict[str, list[float]]:
        sizes = {}
        for impl, call in contenders.items():
            probe = max(await _loop_async(call, 200), 1e-9) / 200
            sizes[impl] = max(1_000, int(budget / probe))
            await _loop_async(call, sizes[impl] // 10)
        samples: dict[str, list[float]] = {impl: [] for impl in contenders}
        for _ in range(repeats):
            for impl, call in contenders.items():
                gc.collect()
                elapsed = await _loop_async(call, sizes[impl])
                samples[impl].append(elapsed / sizes[impl] * 1e9)
        return samples

    for impl, values in asyncio.run(run()).items():
        emit(case, impl, statistics.median(values))


def retained_bytes(call: Sync, n: int) -> float:
    """Bytes still allocated after ``n`` rejected calls (garbage collected first)."""
    _loop_sync(call, 1_000, catch=True)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        _loop_sync(call, n, catch=True)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return float(max(0, sum(stat.size_diff for stat in after.compare_to(before, "filename"))))


# -- the contenders ----------------------------------------------------------------------


def sync_breakers(open_seconds: float = 60) -> dict[str, Callable[[Sync], Sync]]:
    purgatory_factory = purgatory.SyncCircuitBreakerFactory(
        default_threshold=5, default_ttl=open_seconds
    )
    return {
        "safeship": lambda fn: Breaker(
            window=TimeWindow(60), open_duration=open_seconds, register=False
        )(fn),
        "pybreaker": lambda fn: pybreaker.CircuitBreaker(fail_max=5, reset_timeout=open_seconds)(
            fn
        ),
        "circuitbreaker": lambda fn: circuitbreaker.CircuitBreaker(
            failure_threshold=5, recovery_timeout=open_seconds
        )(fn),
        "purgatory": lambda fn: purgatory_factory(circuit=f"c{id(fn)}")(fn),
    }


def open_breaker(impl: str, wrap: Callable[[Sync], Sync]) -> Sync:
    """A wrapped trivial call whose breaker has been opened by failures."""
    state = {"fail": True}

    def dependency() -> int:
        if state["fail"]:
            raise FailureError
        return 1

    guarded = wrap(dependency)
    for _ in range(12):  # a time window judges from 10 calls; the others open at 5
        with contextlib.suppress(Exception):  # tripping the breaker on purpose
            guarded()
    state["fail"] = False
    try:
        guarded()
    except Exception:  # noqa: BLE001 - the rejection we want
        return guarded
    raise RuntimeError(f"{impl} did not open after 12 failures")


def async_breakers() -> dict[str, Callable[[Async], Async]]:
    purgatory_factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
    return {
        "safeship": lambda fn: Breaker(window=TimeWindow(60), register=False)(fn),
        "aiobreaker": lambda fn: aiobreaker.CircuitBreaker(
            fail_max=5, timeout_duration=dt.timedelta(seconds=60)
        )(fn),
        "purgatory": lambda fn: purgatory_factory(circuit=f"a{id(fn)}")(fn),
    }


def retries() -> dict[str, Callable[[Any], Any]]:
    return {
        "safeship": lambda fn: Retry(attempts=3)(fn),
        "tenacity": lambda fn: tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
            retry=tenacity.retry_if_exception_type(Exception),
        )(fn),
        "stamina": lambda fn: stamina.retry(on=Exception, attempts=3)(fn),
    }


# -- cases -------------------------------------------------------------------------------


def run(quick: bool) -> None:
    repeats = 5 if quick else 9
    budget = 0.05 if quick else 0.2
    measure_sync(
        "breaker-sync",
        {"baseline": work} | {impl: wrap(work) for impl, wrap in sync_breakers().items()},
        repeats,
        budget,
    )
    measure_async(
        "breaker-async",
        {"baseline": awork} | {impl: wrap(awork) for impl, wrap in async_breakers().items()},
        repeats,
        budget,
    )
    measure_sync(
        "retry-sync",
        {"baseline": work} | {impl: wrap(work) for impl, wrap in retries().items()},
        repeats,
        budget,
    )
    measure_async(
        "retry-async",
        {"baseline": awork} | {impl: wrap(awork) for impl, wrap in retries().items()},
        repeats,
        budget,
    )
    pipe = pipeline(
        retry=Retry(attempts=3),
        breaker=Breaker(window=TimeWindow(60), register=False),
        timeout=Timeout(10),
    )

    async def with_asyncio_timeout() -> int:
        async with asyncio.timeout(10):
            return await awork()

    measure_async(
        "pipeline-async",
        {"baseline": awork, "safeship": pipe(awork), "asyncio-timeout": with_asyncio_timeout},
        repeats,
        budget,
    )
    # Last: purgatory keeps every rejection's traceback alive for good (in its own
    # state), which would slow the garbage collection of every case after this one.
    # Open for a day, so that no breaker turns half-open (and lets calls through) mid-run.
    breakers = sync_breakers(open_seconds=86_400)
    rejecting = {impl: open_breaker(impl, wrap) for impl, wrap in breakers.items()}
    measure_sync("breaker-open-reject", rejecting, repeats, budget, catch=True)
    for impl, guarded in rejecting.items():
        kept = retained_bytes(guarded, 20_000 if quick else 100_000)
        emit("breaker-open-reject-retained", impl, kept, "count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # breakers opening on purpose would log alerts
    warnings.simplefilter("ignore", DeprecationWarning)
    run(args.quick)


if __name__ == "__main__":
    main()
