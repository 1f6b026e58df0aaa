"""The Redis and two-level tiers against the real Redis: coherence, stampedes across
processes, invalidation after commit reaching another process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from safeship.cache import Cache

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _worker(mode: str, namespace: str, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache.worker", mode, namespace, url, *extra],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.communicate()


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the worker ended early (exit {process.poll()})"
    return line.strip()


async def test_two_level_caches_share_values_and_invalidations(
    redis_url: str, namespace: str
) -> None:
    one, two = Cache(namespace, redis_url=redis_url), Cache(namespace, redis_url=redis_url)
    await one.start()
    await two.start()
    try:
        await one.aset("greeting", {"text": "hi"}, tags=["greetings"])
        assert await two.aget("greeting") == {"text": "hi"}
        assert two.memory is not None and len(two.memory) == 1
        await one.ainvalidate_tags("greetings")
        for _ in range(500):
            if not len(two.memory):
                break
            await asyncio.sleep(0.01)
        assert len(two.memory) == 0
        assert await two.aget("greeting") is None
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_version_bump_misses_every_older_value(redis_url: str, namespace: str) -> None:
    old = Cache(namespace, redis_url=redis_url, memory=False, version=1)
    new = Cache(namespace, redis_url=redis_url, memory=False, version=2)
    try:
        await old.aset("k", 1)
        assert await old.aget("k") == 1
        assert await new.aget("k") is None
    finally:
        await old.aclose()
        await new.aclose()


def test_a_foreign_value_under_the_key_reads_as_a_miss(redis_url: str, namespace: str) -> None:
    cache = Cache(namespace, redis_url=redis_url, memory=False)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(cache.space.item_key("k"), b"not an envelope", ex=30)
        assert cache.get("k", "default") == "default"
        assert cache.snapshot()["errors"] == 1
    finally:
        client.close()
        cache.close()


async def test_two_hundred_concurrent_misses_on_redis_make_one_loader_call(
    redis_url: str, namespace: str
) -> None:
    cache = Cache(namespace, redis_url=redis_url, memory=False)
    calls = 0

    @cache(ttl=60)
    async def slow(pk: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return pk

    try:
        assert set(await asyncio.gather(*(slow(3) for _ in range(200)))) == {3}
        assert calls == 1
    finally:
        await cache.aclose()


def test_concurrent_misses_in_two_processes_make_one_loader_call(
    redis_url: str, namespace: str
) -> None:
    _two_process_stampede(redis_url, namespace)


def test_a_loader_slower_than_the_lease_keeps_it_across_two_processes(
    redis_url: str, namespace: str
) -> None:
    # A 1.2 s lease, a 3 s loader: without renewal the lease lapses at 1.2 s and the
    # other process's waiters (which re-try every lease_ttl) take it and load again.
    _two_process_stampede(redis_url, namespace, "1.2", "3.0")


def _two_process_stampede(redis_url: str, namespace: str, *extra: str) -> None:
    workers = [_worker("stampede", namespace, redis_url, *extra) for _ in range(2)]
    client = redis.Redis.from_url(redis_url)
    try:
        assert [_line(w) for w in workers] == ["ready", "ready"]
        client.rpush(f"{namespace}:go", "go", "go")
        reports = [json.loads(_line(w)) for w in workers]
        assert [r["results"] for r in reports] == [[40], [40]]
        assert int(client.get(f"{namespace}:loads") or 0) == 1
        assert sorted(r["stats"]["loads"] for r in reports) == [0, 1]
    finally:
        for worker in workers:
            _stop(worker)
        client.delete(f"{namespace}:loads", f"{namespace}:go")
        client.close()


@pytest.fixture
def watcher(redis_url: str, namespace: str) -> Iterator[subprocess.Popen[str]]:
    worker = _worker("watch", namespace, redis_url)
    try:
        yield worker
    finally:
        _stop(worker)
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{namespace}:version")
        client.close()


def _next(worker: subprocess.Popen[str]) -> int:
    assert worker.stdin is not None
    worker.stdin.write("next\n")
    worker.stdin.flush()
    return int(json.loads(_line(worker))["value"])


def test_a_tag_invalidation_after_commit_reaches_another_process(
    redis_url: str, namespace: str, watcher: subprocess.Popen[str]
) -> None:
    assert json.loads(_line(watcher))["value"] == 1
    cache = Cache(namespace, redis_url=redis_url)
    engine = sa.create_engine("sqlite://")
    try:
        with Session(engine) as session:
            session.execute(sa.text("select 1"))
            cache.invalidate_after_commit(session, tags=["product:1"])
            session.rollback()
        cache.invalidate_tags("marker")
        assert _next(watcher) == 1  # rolled back: nothing was invalidated
        cache.set("here", 1, tags=["product:1"])
        with Session(engine) as session:
            session.execute(sa.text("select 1"))
            cache.invalidate_after_commit(session, tags=["product:1", "marker"])
            assert cache.get("here") == 1  # not before the commit
            session.commit()
        assert cache.get("here") is None
        assert _next(watcher) == 2
    finally:
        cache.close()
        engine.dispose()


def test_a_core_connection_invalidates_only_when_it_commits(redis_url: str, namespace: str) -> None:
    cache = Cache(namespace, redis_url=redis_url)
    engine = sa.create_engine("sqlite://")
    try:
        cache.set("row", 1, tags=["rows"])
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            cache.invalidate_after_commit(conn, tags=["rows"])
            assert cache.get("row") == 1
            conn.rollback()
        assert cache.get("row") == 1
        with engine.begin() as conn:
            conn.execute(sa.text("select 1"))
            cache.invalidate_after_commit(conn, tags=["rows"])
            assert cache.get("row") == 1
        assert cache.get("row") is None
    finally:
        cache.close()
        engine.dispose()


async def test_more_concurrent_redis_calls_than_connections_wait_instead_of_failing(
    redis_url: str, namespace: str
) -> None:
    import redis.asyncio as aredis

    pool = aredis.ConnectionPool.from_url(redis_url, max_connections=8, socket_timeout=30)
    cache = Cache(namespace, aredis=aredis.Redis(connection_pool=pool), memory=False)

    @cache(ttl=60)
    async def square(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * x

    try:
        results = await asyncio.gather(*(square(x) for x in range(300)))
        assert results == [x * x for x in range(300)]
        assert (cache.snapshot()["errors"], cache.snapshot()["degraded"]) == (0, 0)
    finally:
        await cache.aclose()


def test_sync_misses_in_two_caches_share_one_load_through_the_lease(
    redis_url: str, namespace: str
) -> None:
    import threading

    caches = [Cache(namespace, redis_url=redis_url) for _ in range(2)]
    loads: list[int] = []
    gate = threading.Barrier(20)

    def build(cache: Cache) -> Any:
        @cache(ttl=60)
        def slow(x: int) -> int:
            loads.append(x)
            threading.Event().wait(0.05)
            return x

        return slow

    functions = [build(cache) for cache in caches]

    def call(index: int) -> None:
        gate.wait()
        functions[index % 2](9)

    try:
        for cache in caches:
            cache.start_sync()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert loads == [9]
    finally:
        for cache in caches:
            cache.close()


def test_a_sync_loader_slower_than_the_lease_keeps_it(redis_url: str, namespace: str) -> None:
    import threading

    caches = [Cache(namespace, redis_url=redis_url, lease_ttl=0.6, lock_timeout=30.0)
              for _ in range(2)]  # fmt: skip
    loads: list[int] = []
    started = threading.Event()

    def build(cache: Cache) -> Any:
        @cache(ttl=60)
        def slow(x: int) -> int:
            loads.append(x)
            started.set()
            threading.Event().wait(2.0)  # more than three lease periods
            return x

        return slow

    first, second = (build(cache) for cache in caches)
    try:
        for cache in caches:
            cache.start_sync()
        holder = threading.Thread(target=first, args=(5,))
        holder.start()
        assert started.wait(10)
        assert second(5) == 5  # waits on the lease the first cache keeps renewing
        holder.join()
        assert loads == [5]
        lease = caches[0].redis.lease_key(first.key(5))  # type: ignore[union-attr]
        assert not redis.Redis.from_url(redis_url).exists(lease)  # released, not left
    finally:
        for cache in caches:
            cache.close()


@pytest.mark.postgres
async def test_an_async_session_invalidates_when_it_commits(
    namespace: str, postgres_url: str
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    cache = Cache(namespace)
    engine = create_async_engine(postgres_url)
    try:
        cache.set("row", 1, tags=["rows"])
        async with AsyncSession(engine) as session:
            await session.execute(sa.text("select 1"))
            cache.invalidate_after_commit(session, tags=["rows"])
            await session.rollback()
        assert cache.get("row") == 1
        async with AsyncSession(engine) as session:
            await session.execute(sa.text("select 1"))
            cache.invalidate_after_commit(session, tags=["rows"])
            assert cache.get("row") == 1
            await session.commit()
        assert cache.get("row") is None
    finally:
        await engine.dispose()
