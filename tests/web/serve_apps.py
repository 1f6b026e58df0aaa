"""ASGI apps that the subprocess tests run under uvicorn (configured by environment)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from safeship.lifecycle import Lifecycle
from safeship.observe.health import HealthRegistry
from safeship.web import ApiKeyAuth, RedisFailureStore, protect

# -- graceful shutdown ----------------------------------------------------------------

_events = Path(os.environ.get("TEST_SAFESHIP_EVENTS", os.devnull))
registry = HealthRegistry()
lifecycle = Lifecycle(
    health=registry,
    drain_delay=float(os.environ.get("TEST_SAFESHIP_DRAIN", "1.0")),
    shutdown_timeout=10.0,
)
_slow_running = 0


def _record(event: str) -> None:
    with _events.open("a") as out:
        out.write(event + "\n")


async def slow(request: Request) -> PlainTextResponse:
    global _slow_running
    _slow_running += 1
    try:
        await asyncio.sleep(float(request.query_params.get("s", "2")))
    finally:
        _slow_running -= 1
    return PlainTextResponse("done")


async def stats(_request: Request) -> JSONResponse:
    return JSONResponse({"slow_running": _slow_running, "draining": lifecycle.draining})


async def ticker(stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    _record("background-stopped")


lifecycle.add_background(ticker)
lifecycle.add_close_hook(lambda: _record("close-pool"), name="pool")
lifecycle.add_close_hook(lambda: _record("close-redis"), name="redis")

lifecycle_app = lifecycle.wrap(
    protect(
        Starlette(routes=[Route("/slow", slow), Route("/stats", stats)]),
        health=registry,
        configure_logs=False,
        access_log=False,
    )
)

# -- multiprocess metrics -------------------------------------------------------------


async def work(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"x-worker-pid": str(os.getpid())})


metrics_app = protect(
    Starlette(routes=[Route("/work/{n}", work)]), configure_logs=False, access_log=False
)

# -- brute-force limiting shared through Redis ----------------------------------------


async def admin(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin")


redis_auth_app = ApiKeyAuth(
    Starlette(routes=[Route("/admin", admin)]),
    keys=["ss_good"],
    protected_prefixes=["/admin"],
    store=RedisFailureStore(
        os.environ.get("TEST_SAFESHIP_REDIS_URL", "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get("TEST_SAFESHIP_AUTH_PREFIX", "safeship-test"),
    ),
)

# -- client addresses behind (or without) a trusted proxy -----------------------------


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.client.host if request.client else "none")


proxied_auth_app = protect(
    Starlette(routes=[Route("/admin", admin), Route("/whoami", whoami)]),
    api_keys=["ss_good"],
    protected_prefixes=["/admin"],
    trusted_proxies=[
        p for p in os.environ.get("TEST_SAFESHIP_TRUSTED_PROXIES", "").split(",") if p
    ],
    configure_logs=False,
    access_log=False,
)
