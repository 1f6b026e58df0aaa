"""The in-process cache: hits, bounds, TTL, staleness, XFetch, single-flight, tags."""

from __future__ import annotations

import asyncio
import enum
import inspect
import threading
from typing import Any

import pytest

from safeship.cache import Cache, CacheCollector, CacheKeyError, xfetch_due
from safeship.cache._entry import Entry
from safeship.cache._memory import MemoryTier


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _counting(cache: Cache, **options: Any) -> tuple[Any, list[Any]]:
    seen: list[Any] = []

    @cache(**options)
    def double(x: Any) -> Any:
        seen.append(x)
        return None if x is None else x * 2

    return double, seen


def test_a_repeat_call_is_served_from_memory_and_counted() -> None:
    cache = Cache("mem-hit")
    double, seen = _counting(cache)
    assert [double(2), double(2), double(3)] == [4, 4, 6]
    assert seen == [2, 3]
    figures = cache.snapshot()
    assert (figures["hits"], figures["misses"], figures["entries"]) == (1, 2, 2)


def test_equal_arguments_of_different_types_are_different_calls() -> None:
    cache = Cache("mem-types")
    double, seen = _counting(cache)
    assert (double(1), double(True), double(1.0), double("1")) == (2, 2, 2.0, "11")
    assert seen == [1, True, 1.0, "1"]
    double(True)
    assert len(seen) == 4


def test_unhashable_and_keyword_arguments_use_the_canonical_key() -> None:
    cache = Cache("mem-canonical")
    seen: list[Any] = []

    @cache()
    def total(items: list[int], *, scale: int = 1) -> int:
        seen.append(items)
        return sum(items) * scale

    assert total([1, 2], scale=2) == total([1, 2], scale=2) == 6
    assert total([1, 2]) == 3
    assert len(seen) == 2
    with pytest.raises(CacheKeyError):
        total(object())  # type: ignore[arg-type]


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = Cache("mem-ttl", clock=clock, xfetch_beta=0)
    double, seen = _counting(cache, ttl=10)
    double(1)
    clock.now += 9.9
    double(1)
    clock.now += 0.2
    double(1)
    assert seen == [1, 1]


def test_the_memory_tier_is_bounded_by_entries_and_keeps_recently_used_ones() -> None:
    cache = Cache("mem-bound", max_entries=3)
    double, seen = _counting(cache)
    for x in (1, 2, 3):
        double(x)
    double(1)  # used: survives the next eviction
    double(4)
    assert cache.memory is not None and len(cache.memory) == 3
    seen.clear()
    double(1)
    double(2)
    assert seen == [2]


def test_the_memory_tier_is_bounded_by_bytes() -> None:
    cache = Cache("mem-bytes", max_bytes=4_000)
    blob, _ = _counting(cache)
    for x in range(10):
        blob("x" * 1000 + str(x))
    assert cache.memory is not None
    assert 0 < cache.memory.bytes <= 4_000
    assert len(cache.memory) < 10


def test_none_is_only_cached_when_negative_caching_is_on() -> None:
    off, seen_off = _counting(Cache("neg-off"))
    off(None)
    off(None)
    on, seen_on = _counting(Cache("neg-on"), negative_ttl=5)
    on(None)
    on(None)
    assert (len(seen_off), len(seen_on)) == (2, 1)


def test_a_stale_value_is_served_while_one_refresh_runs() -> None:
    clock = Clock()
    cache = Cache("mem-swr", clock=clock, xfetch_beta=0)
    release = threading.Event()
    seen: list[int] = []

    @cache(ttl=10, stale_while_revalidate=30)
    def value() -> int:
        seen.append(1)
        if len(seen) > 1:
            release.wait(5)
        return len(seen)

    assert value() == 1
    clock.now += 11
    assert [value(), value()] == [1, 1]  # stale, without waiting for the refresh
    release.set()
    for _ in range(500):
        if cache.snapshot()["loads"] == 2 and not cache._flights:
            break
        threading.Event().wait(0.01)
    assert value() == 2
    assert len(seen) == 2
    assert cache.snapshot()["stale_served"] == 2


def test_a_stale_value_answers_a_loader_error_within_stale_if_error() -> None:
    clock = Clock()
    cache = Cache("mem-sie", clock=clock, xfetch_beta=0)
    fail = False

    @cache(ttl=10, stale_if_error=60)
    def price() -> int:
        if fail:
            raise ConnectionError("pricing down")
        return 42

    assert price() == 42
    fail = True
    clock.now += 30
    assert price() == 42
    clock.now += 41  # 71 s after the load: past ttl + stale_if_error
    with pytest.raises(ConnectionError):
        price()


def test_xfetch_refreshes_early_and_more_often_near_expiry() -> None:
    assert not xfetch_due(now=0, expires=100, delta=1, beta=1, draw=0.5)
    assert xfetch_due(now=99.9, expires=100, delta=1, beta=1, draw=0.5)
    assert xfetch_due(now=100, expires=100, delta=0, beta=0, draw=1)
    assert not xfetch_due(now=99, expires=100, delta=1, beta=0, draw=1e-9)


def test_an_early_refresh_is_counted_and_replaces_the_value() -> None:
    clock = Clock()
    cache = Cache("mem-xfetch", clock=clock, draw=lambda: 1e-12)
    seen: list[int] = []

    @cache(ttl=10)
    def value() -> int:
        seen.append(1)
        threading.Event().wait(0.02)  # XFetch weighs the time a recomputation takes
        return len(seen)

    value()
    clock.now += 9.99
    value()
    for _ in range(500):
        if len(seen) == 2 and not cache._flights:
            break
        threading.Event().wait(0.01)
    assert cache.snapshot()["early_refreshes"] >= 1
    assert value() == 2


async def test_two_hundred_concurrent_async_misses_make_one_loader_call() -> None:
    cache = Cache("stampede-async")
    calls = 0

    @cache(ttl=60)
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return x

    results = await asyncio.gather(*(slow(7) for _ in range(200)))
    assert set(results) == {7}
    assert calls == 1
    assert cache.snapshot()["coalesced"] == 199


def test_concurrent_sync_misses_from_threads_make_one_loader_call() -> None:
    cache = Cache("stampede-sync")
    calls = 0
    gate = threading.Barrier(20)

    @cache(ttl=60)
    def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        threading.Event().wait(0.05)
        return x

    def call() -> None:
        gate.wait()
        slow(7)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == 1


async def test_a_loader_error_reaches_every_waiter_and_is_not_cached() -> None:
    cache = Cache("mem-error")
    calls = 0

    @cache()
    async def broken() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("nope")

    results = await asyncio.gather(*(broken() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    with pytest.raises(ValueError, match="nope"):
        await broken()
    assert calls == 2


def test_tags_invalidate_every_value_carrying_them() -> None:
    cache = Cache("mem-tags")
    seen: list[int] = []

    @cache(tags=["product:{pk}", "catalog"])
    def product(pk: int) -> int:
        seen.append(pk)
        return pk

    product(1)
    product(2)
    cache.invalidate_tags("product:1")
    product(1)
    product(2)
    assert seen == [1, 2, 1]
    cache.invalidate_tags("catalog")
    product(2)
    assert seen == [1, 2, 1, 2]


async def test_the_object_api_gets_sets_and_deletes_sync_and_async() -> None:
    cache = Cache("mem-object")
    cache.set(("user", 1), {"name": "a"}, tags=["user:1"])
    assert cache.get(("user", 1)) == {"name": "a"}
    assert cache.get(("user", 2), "absent") == "absent"
    cache.delete(("user", 1))
    assert cache.get(("user", 1)) is None
    await cache.aset("k", 1)
    assert await cache.aget("k") == 1
    await cache.adelete("k")
    assert await cache.aget("k") is None
    assert await cache.aget_or_set("k", _one) == 1
    assert cache.get_or_set("s", lambda: 2) == 2


async def _one() -> int:
    return 1


def test_a_decorated_function_names_and_invalidates_its_own_key() -> None:
    cache = Cache("mem-fn-key", env="prod", version=2)
    double, seen = _counting(cache)
    assert double.key(3).startswith("prod:mem-fn-key:2:")
    double(3)
    double.invalidate(3)
    double(3)
    assert seen == [3, 3]


def test_the_collector_exports_events_by_namespace() -> None:
    cache = Cache("mem-metrics")
    double, _ = _counting(cache)
    double(1)
    double(1)
    families = {family.name: family for family in CacheCollector().collect()}
    samples = {
        (s.labels["namespace"], s.labels["event"]): s.value
        for s in families["safeship_cache_events"].samples
        if s.name.endswith("_total")
    }
    assert samples[("mem-metrics", "hits")] == 1
    assert samples[("mem-metrics", "misses")] == 1


def test_the_health_check_reports_the_figures() -> None:
    cache = Cache("mem-health")
    double, _ = _counting(cache)
    double(1)
    double(1)
    report = cache.health_check()()
    assert (report.status, report.observed_value, report.output) == ("pass", 0.5, None)


def test_a_load_overtaken_by_an_invalidation_is_returned_but_not_cached() -> None:
    cache = Cache("mem-overtaken")
    seen: list[int] = []

    @cache(tags=["stock:{pk}"])
    def stock(pk: int) -> int:
        seen.append(pk)
        if len(seen) == 1:
            cache.invalidate_tags("stock:1")  # a write committed while this load ran
        return len(seen)

    assert stock(1) == 1
    assert stock(1) == 2  # the first result was not kept
    assert stock(1) == 2
    assert seen == [1, 1]


class Level(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_argument_hits_keep_equal_values_of_other_types_apart(kind: str) -> None:
    """One-argument hits read an index keyed by the argument alone: ``True``, ``1.0`` and
    ``Level.ONE`` equal ``1`` there, and each still gets its own value, in either order."""
    cache = Cache(f"mem-index-{kind}")
    seen: list[Any] = []

    def load(x: Any) -> Any:
        seen.append(x)
        return (type(x).__name__, len(seen))

    if kind == "sync":
        call = cache(ttl=60)(load)
    else:

        @cache(ttl=60)
        async def aload(x: Any) -> Any:
            return load(x)

        def call(x: Any) -> Any:
            return asyncio.run(aload(x))

    order = [True, 1.0, Level.ONE, 1, b"1", "1", None]
    first = [call(x) for x in order]
    names = ["bool", "float", "Level", "int", "bytes", "str", "NoneType"]
    assert [name for name, _ in first] == names
    assert [call(x) for x in reversed(order)] == first[::-1]  # every one a hit, its own value
    assert len(seen) == len(order)
    assert cache.snapshot()["hits"] == len(order)


def test_the_argument_index_follows_the_entries_through_replace_evict_drop_and_clear() -> None:
    tier = MemoryTier(max_entries=2)
    index = tier.arg_index(7)
    assert tier.arg_index(7) is index

    def entry(key: str, value: Any) -> Entry:
        return Entry(key, value, expires=2e9, stale_until=2e9, delta=0.0, beta=0.0)

    first = entry("k1", "a")
    tier.put((7, 1, int), first)
    tier.put((7, True, bool), entry("kt", "t"))  # not indexed: True == 1
    tier.put((7, (1, 2), (int, int)), entry("k12", "b"))  # several arguments: not indexed
    assert index == {} and len(tier) == 2  # the bound evicted the int entry
    replaced = entry("k1", "c")
    tier.put((7, 1, int), replaced)
    tier.put((7, "s", str), entry("ks", "s"))
    assert index == {1: replaced, "s": tier.data[(7, "s", str)]}
    assert replaced.argtype is int and tier.data[(7, "s", str)].argtype is str
    assert tier.drop_keys(["k1"]) == 1
    assert index == {"s": tier.data[(7, "s", str)]}
    tier.put((8, "s", str), entry("other", "o"))  # another function's slot has no index here
    tier.clear()
    assert index == {} and tier.arg_index(7) is index


def test_a_hit_allocates_no_closure_cells() -> None:
    """The miss path's lambdas close over the arguments; kept out of the wrapper, a hit
    does not allocate cells for them."""
    cache = Cache("mem-cells")

    @cache(ttl=60)
    def sync_fn(x: int) -> int:
        return x

    @cache(ttl=60)
    async def async_fn(x: int) -> int:
        return x

    assert sync_fn.__code__.co_cellvars == ()
    assert async_fn.__code__.co_cellvars == ()
    assert inspect.iscoroutinefunction(async_fn)
