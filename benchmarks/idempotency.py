"""Idempotency keys: overhead per request through a small FastAPI app, same run.

    python benchmarks/idempotency.py [--quick]

Cases (req/s, in process through httpx's ASGI transport, 16 requests in flight):
  first-request-redis     a new Idempotency-Key each request, keys in Redis
  first-request-postgres  the same, keys in PostgreSQL (a throw-away database)
  replay-redis            one key sent again and again: the stored response replayed
Impls: ``safeship``, ``baseline`` (the app with no idempotency), and the peers
``asgi-idempotency-header``, ``fastidempotent``, ``idemkit`` on the stores they support.
A ``ratio`` line per case gives each impl's req/s over the baseline's of the same round,
and a ``us-added`` line the time it adds to each request (1/rate over the baseline's).
The ratio counts the in-process client's own work in the baseline (httpx costs more per
request than the app, and ~40 µs more again when ``sniffio`` is not installed, as httpx
then looks for it on every request); ``us-added`` does not depend on the client.
Rounds interleave the impls and the best round of each is kept, so a noisy neighbour
slows all of them alike. Keys go to Redis database 12 (``SAFESHIP_BENCH_IDEM_REDIS_URL``)
under ``bench:``, and each case deletes them when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse

#: Its own database: every key a run writes is under ``bench:`` and deleted at its end.
REDIS_URL = os.environ.get("SAFESHIP_BENCH_IDEM_REDIS_URL", "redis://127.0.0.1:6379/12")
ADMIN_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Requests in flight at once: a store's round trips overlap other requests' work, as
#: they do in a server under load.
CONCURRENCY = 16
PAYLOAD = {"item": "tea", "qty": 2, "note": "x" * 100}

Setup = Callable[[FastAPI], Awaitable[None]]
#: An impl's builder: (store, database URL, Redis client, exit stack) -> app.  What the
#: build opens that the shared Redis client does not cover (a database engine or pool) is
#: pushed on the stack, closed at the end of the case.
Build = Callable[[str, str, redis.asyncio.Redis, contextlib.AsyncExitStack], Awaitable[FastAPI]]


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {
        "bench": "idempotency",
        "case": case,
        "impl": impl,
        "value": round(value, 3),
        "unit": unit,
    }
    print(json.dumps(line), flush=True)


def make_app(decorate: Callable[[Any], Any] = lambda f: f) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    @decorate
    async def create_order() -> JSONResponse:
        return JSONResponse({"id": 1, "item": "tea"}, status_code=201)

    return app


async def _safeship(
    app_store: str, db_url: str, client: redis.asyncio.Redis, stack: contextlib.AsyncExitStack
) -> FastAPI:
    from safeship.idempotency import (
        IdempotencyMiddleware,
        RedisStore,
        SqlStore,
        idempotent,
        principal_from_header,
    )
    from safeship.idempotency._schema import idempotency

    app = make_app(idempotent())
    if app_store == "redis":
        store: Any = RedisStore(client, prefix=f"bench:{uuid.uuid4().hex}:")
        stack.push_async_callback(store.aclose)
    else:
        from sqlalchemy.ext.asyncio import create_async_engine

        # The store's own engine on asyncpg (as the peers use), as docs/idempotency.md
        # recommends: no worker thread per call, a pool as large as the requests in
        # flight, no pre-ping (a stale connection fails one request closed).  The sync
        # psycopg engine runs each call in a thread: in two same-run comparisons it
        # reached 0.099 and 0.130 of baseline where this reached 0.171 and 0.155.
        sync = sa.create_engine(db_url)
        idempotency.create(sync, checkfirst=True)
        sync.dispose()
        async_url = db_url.replace("+psycopg", "+asyncpg")
        engine = create_async_engine(async_url, pool_size=CONCURRENCY)
        stack.push_async_callback(engine.dispose)
        store = SqlStore(engine)
    app.add_middleware(
        IdempotencyMiddleware, store=store, principal=principal_from_header("x-api-key")
    )
    return app


async def _asgi_idempotency_header(
    app_store: str, _db: str, client: redis.asyncio.Redis, _stack: contextlib.AsyncExitStack
) -> FastAPI:
    if app_store != "redis":
        raise LookupError("no PostgreSQL backend")
    from idempotency_header_middleware import IdempotencyHeaderMiddleware
    from idempotency_header_middleware.backends.redis import RedisBackend

    app = make_app()
    prefix = f"bench:aih:{uuid.uuid4().hex}:"
    backend = RedisBackend(client, keys_key=prefix + "keys", response_key=prefix + "r")
    app.add_middleware(IdempotencyHeaderMiddleware, backend=backend)
    return app


async def _fastidempotent(
    app_store: str, db_url: str, client: redis.asyncio.Redis, stack: contextlib.AsyncExitStack
) -> FastAPI:
    from fastidempotent import IdempotencyMiddleware

    if app_store == "redis":
        from fastidempotent.backends.redis import RedisBackend

        backend: Any = RedisBackend(client=client, key_prefix=f"bench:fi:{uuid.uuid4().hex}:")
    else:
        from fastidempotent.backends.postgres import PostgresBackend

        backend = PostgresBackend(url=db_url.replace("+psycopg", "+asyncpg"))
        stack.push_async_callback(backend.close)
    with contextlib.suppress(AttributeError):
        await backend.init()
    app = make_app()
    app.add_middleware(IdempotencyMiddleware, backend=backend)
    return app


async def _idemkit(
    app_store: str, db_url: str, client: redis.asyncio.Redis, stack: contextlib.AsyncExitStack
) -> FastAPI:
    from idemkit import HttpConfig, IdempotencyMiddleware

    if app_store == "redis":
        from idemkit import RedisBackend

        backend: Any = RedisBackend(client, namespace=f"bench:ik:{uuid.uuid4().hex}:")
    else:
        from idemkit import PostgresBackend
        from idemkit.backends.postgres import init_pg

        dsn = db_url.replace("postgresql+psycopg", "postgresql")
        with contextlib.suppress(Exception):  # already created by an earlier build
            await init_pg(dsn)
        backend = PostgresBackend.from_url(dsn)
        stack.push_async_callback(backend.aclose)  # its asyncpg pool
    for name in ("connect", "start", "setup", "init", "create_schema", "migrate"):
        method = getattr(backend, name, None)
        if method is not None:
            with contextlib.suppress(Exception):
                result = method()
                if asyncio.iscoroutine(result):
                    await result
    config = HttpConfig(
        scope=lambda request: request.headers.get("x-api-key", ""), scope_mode="strict"
    )
    app = make_app()
    app.add_middleware(IdempotencyMiddleware, backend=backend, config=config, manage_backend=False)
    return app


async def _baseline(
    _store: str, _db: str, _client: redis.asyncio.Redis, _stack: contextlib.AsyncExitStack
) -> FastAPI:
    return make_app()


IMPLS: dict[str, Build] = {
    "baseline": _baseline,
    "safeship": _safeship,
    "asgi-idempotency-header": _asgi_idempotency_header,
    "fastidempotent": _fastidempotent,
    "idemkit": _idemkit,
}


async def _rate(app: FastAPI, requests: int, *, same_key: bool) -> float:
    """Requests per second from ``CONCURRENCY`` clients at once (one in-process app)."""
    transport = httpx.ASGITransport(app=app)
    fixed = str(uuid.uuid4())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one() -> None:
            key = fixed if same_key else str(uuid.uuid4())
            response = await client.post(
                "/orders", json=PAYLOAD, headers={"x-api-key": "bench", "idempotency-key": key}
            )
            if response.status_code != 201:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")

        async def worker(count: int) -> None:
            for _ in range(count):
                await one()

        await worker(20)  # warm-up (and, when replaying, the first run)
        started = time.perf_counter()
        await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        done = requests // CONCURRENCY * CONCURRENCY
        return done / (time.perf_counter() - started)


async def _drop_bench_keys(client: redis.asyncio.Redis) -> None:
    """Delete the keys the impls wrote (all under ``bench:``; a day's TTL otherwise keeps
    them, and every run leaves ~100k)."""
    batch: list[Any] = []
    async for key in client.scan_iter(match="bench:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


async def _case(case: str, store: str, db_url: str, requests: int, rounds: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        stack.push_async_callback(client.aclose)
        stack.push_async_callback(_drop_bench_keys, client)
        await _measure(case, store, db_url, requests, rounds, client, stack)


async def _measure(
    case: str,
    store: str,
    db_url: str,
    requests: int,
    rounds: int,
    client: redis.asyncio.Redis,
    stack: contextlib.AsyncExitStack,
) -> None:
    apps: dict[str, FastAPI] = {}
    for impl, build in IMPLS.items():
        try:
            apps[impl] = await build(store, db_url, client, stack)
            await _rate(apps[impl], 5, same_key=case.startswith("replay"))
        except Exception as exc:  # noqa: BLE001 -- a peer that cannot run a case is left out, said why
            apps.pop(impl, None)
            print(f"# {case}: {impl} skipped: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for impl, app in apps.items():
            rate = await _rate(app, requests, same_key=case.startswith("replay"))
            best[impl] = max(best.get(impl, 0.0), rate)
    for impl, rate in best.items():
        emit(case, impl, rate, "req/s")
    for impl, rate in best.items():
        if impl != "baseline":
            emit(case, impl, rate / best["baseline"], "ratio")
    for impl, rate in best.items():  # what each adds to a request, whatever the client costs
        if impl != "baseline":
            emit(case, impl, 1e6 / rate - 1e6 / best["baseline"], "us-added")


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    admin = sa.create_engine(ADMIN_DSN, isolation_level="AUTOCOMMIT")
    name = f"safeship_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def main(quick: bool) -> None:
    requests, rounds = (96, 3) if quick else (1600, 5)
    async with scratch_database() as db_url:
        await _case("first-request-redis", "redis", db_url, requests, rounds)
        await _case("first-request-postgres", "postgres", db_url, requests, rounds)
        await _case("replay-redis", "redis", db_url, requests, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under 60 s)")
    asyncio.run(main(parser.parse_args().quick))
