"""Graceful shutdown: unit behaviour, and a real uvicorn process under load."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.lifecycle import Lifecycle
from safeship.observe.health import HealthRegistry
from tests.web.server_process import serve


async def test_close_hooks_run_in_reverse_order_and_failures_do_not_stop_others() -> None:
    calls: list[str] = []
    lifecycle = Lifecycle(handle_signals=False)

    async def close_async() -> None:
        calls.append("async")

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("close failed")

    lifecycle.add_close_hook(lambda: calls.append("first"))
    lifecycle.add_close_hook(broken)
    lifecycle.add_close_hook(close_async)
    await lifecycle.startup()
    await lifecycle.shutdown()
    assert calls == ["async", "broken", "first"]


async def test_background_tasks_stop_after_their_unit() -> None:
    lifecycle = Lifecycle(handle_signals=False)
    units: list[int] = []

    async def worker(stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            units.append(n)
            await asyncio.sleep(0)

    lifecycle.add_background(worker)
    await lifecycle.startup()
    for _ in range(1000):
        if len(units) >= 3:
            break
        await asyncio.sleep(0)
    await lifecycle.shutdown()
    count = len(units)
    await asyncio.sleep(0)
    assert len(units) == count


async def test_stuck_background_task_is_cancelled_at_the_deadline() -> None:
    lifecycle = Lifecycle(handle_signals=False, shutdown_timeout=0.05)

    async def stuck(_stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    lifecycle.add_background(stuck)
    await lifecycle.startup()
    started = time.perf_counter()
    await lifecycle.shutdown()
    assert time.perf_counter() - started < 2.0


async def test_begin_drain_fails_readiness_at_once() -> None:
    registry = HealthRegistry()
    lifecycle = Lifecycle(health=registry, handle_signals=False)
    assert (await registry.run("readiness")).http_status == 200
    lifecycle.begin_drain()
    assert lifecycle.draining
    assert (await registry.run("readiness")).http_status == 503


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="drain_delay"):
        Lifecycle(drain_delay=-1)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        Lifecycle(shutdown_timeout=float("inf"))


async def test_wrap_forwards_lifespan_to_the_app() -> None:
    events: list[str] = []
    lifecycle = Lifecycle(handle_signals=False)
    lifecycle.add_close_hook(lambda: events.append("hook"))

    from contextlib import asynccontextmanager
    from typing import Any

    @asynccontextmanager
    async def app_lifespan(_app: Any):  # type: ignore[no-untyped-def]
        events.append("app-start")
        yield
        events.append("app-stop")

    inner = Starlette(routes=[Route("/", lambda r: PlainTextResponse("hi"))], lifespan=app_lifespan)
    app = lifecycle.wrap(inner)
    sent: list[dict[str, str]] = []
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app-start", "hook", "app-stop"]


async def test_wrap_serves_apps_without_lifespan_support() -> None:
    async def plain(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan here")

    lifecycle = Lifecycle(handle_signals=False)
    app = lifecycle.wrap(plain)
    sent: list[dict[str, str]] = []
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    inbox.put_nowait({"type": "lifespan.shutdown"})

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, inbox.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.slow
async def test_sigterm_under_uvicorn_drains_and_exits_zero(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    env = {"TEST_SAFESHIP_EVENTS": str(events), "TEST_SAFESHIP_DRAIN": "1.0"}
    with serve("serve_apps:lifecycle_app", env=env, ready_path="/readyz") as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
            slow = [asyncio.create_task(client.get("/slow?s=2")) for _ in range(50)]
            for _ in range(500):
                if (await client.get("/stats")).json()["slow_running"] == 50:
                    break
                await asyncio.sleep(0.02)
            served.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            async with httpx.AsyncClient(base_url=served.url, timeout=5) as fresh:
                assert (await fresh.get("/readyz")).status_code == 503
            responses = await asyncio.gather(*slow)
        assert [r.status_code for r in responses] == [200] * 50
        assert {r.text for r in responses} == {"done"}
        refused = False
        async with httpx.AsyncClient(base_url=served.url, timeout=2) as probe:
            for _ in range(500):
                try:
                    response = await probe.get("/readyz", headers={"Connection": "close"})
                except httpx.TransportError:
                    refused = True
                    break
                assert response.status_code == 503
                await asyncio.sleep(0.01)
        assert refused
        exit_code = await asyncio.to_thread(served.process.wait, 15)
        assert exit_code == 0
        assert time.monotonic() - signalled < 1.0 + 10.0
    assert events.read_text().splitlines() == [
        "background-stopped",
        "close-redis",
        "close-pool",
    ]
