"""``safeship demo``: the orders service, the control plane and traffic, in one process.

Both servers run on one event loop; Ctrl-C (or SIGTERM) stops the traffic, then both
servers, cleanly.  The batched listing starts in shadow mode and is promoted to a guarded
canary once its shadow comparisons are clean, so a newcomer sees shadow → canary → (with
``--break-candidate`` or the ``demo.break-candidate`` flag) automatic rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr
from rich.console import Console

from safeship.cache import CacheReporter
from safeship.db._engine import create_engine
from safeship.db._migrate import upgrade
from safeship.demo.events import DeliveredEvents, start_relay
from safeship.demo.orders import BREAK_JOBS_FLAG, create_orders_app, demo_jobs, seed_flags
from safeship.demo.polling import BREAK_FLAG, ROLLOUT_NAME, polling_rollout
from safeship.demo.traffic import TrafficEvents, generate_traffic
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
from safeship.resilience.board import BreakerReporter
from safeship.rollouts import GuardAgent, Plan, RolloutGuard, RolloutNotFoundError
from safeship.server import create_app
from safeship.server.keys import new_key
from safeship.settings import Settings

logger = logging.getLogger("safeship.demo")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the demo."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def demo_settings(settings: Settings) -> tuple[Settings, str, str]:
    """Settings with a fresh read key and admin key for this run (printed once)."""
    read_key, admin_key = new_key(), new_key()
    keys = f"demo-reader:read:{read_key},demo-admin:admin:{admin_key}"
    return settings.model_copy(update={"admin_keys": SecretStr(keys)}), read_key, admin_key


SHADOW_SECONDS = 15.0
SHADOW_COMPARISONS = 30


def run_demo(
    settings: Settings,
    *,
    traffic: bool,
    out: Console,
    break_candidate: float | None = None,
    broker_url: str | None = None,
    break_jobs: bool = False,
) -> None:
    """Run until interrupted; ``break_candidate`` seconds after start (and not before the
    listing reached canary), break the candidate; with ``break_jobs``, order confirmation
    jobs fail (retries, then dead letters) until the ``demo.break-jobs`` flag is off."""
    asyncio.run(
        _main(
            settings,
            traffic=traffic,
            out=out,
            break_candidate=break_candidate,
            broker_url=broker_url,
            break_jobs=break_jobs,
        )
    )


def start_listing_rollout(engine: sa.Engine, store: FlagStore, flags: FlagClient) -> GuardAgent:
    """The guarded rollout of the batched listing, fed by this process (created once)."""
    guard = RolloutGuard(engine, store)
    try:
        record = guard.get(ROLLOUT_NAME)
    except RolloutNotFoundError:
        record = guard.create(
            ROLLOUT_NAME,
            actor="demo",
            mode="shadow",
            reason="demo: shadow first, then a guarded canary",
            plan=Plan(steps=(10.0, 25.0, 50.0, 100.0), min_hold=20.0, min_sample=40),
        )
    rollout = polling_rollout(engine, flags, mode=record.mode)
    return GuardAgent(guard, [rollout], interval=1.0)


async def _until(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _shadow_phase(guard: RolloutGuard) -> tuple[str, str]:
    """``promote``, ``wait``, ``differs`` or ``done`` (not in shadow any more), and why."""
    record = guard.get(ROLLOUT_NAME)
    if record.mode != "shadow" or record.status not in ("running", "paused"):
        return "done", f"the listing is {record.status} in {record.mode} mode"
    shadow = guard.shadow(ROLLOUT_NAME, samples=0)
    bad = shadow.counts["mismatches"] + shadow.counts["candidate_errors"]
    why = f"{shadow.comparisons} shadow comparisons, {bad} mismatches or candidate errors"
    if bad:
        return "differs", why
    return ("promote" if shadow.comparisons >= SHADOW_COMPARISONS else "wait"), why


async def promote_after_shadow(
    guard: RolloutGuard,
    stop: asyncio.Event,
    promoted: asyncio.Event,
    out: Console,
    *,
    seconds: float = SHADOW_SECONDS,
) -> None:
    """After ``seconds`` of shadow traffic, promote the listing to canary as soon as at least
    ``SHADOW_COMPARISONS`` comparisons were made and none differed or failed; ``promoted``
    is set then (or at once when the listing is no longer in shadow mode)."""
    try:
        await _until(stop, seconds)
        warned = False
        while not stop.is_set():
            phase, why = await asyncio.to_thread(_shadow_phase, guard)
            if phase == "promote":
                with contextlib.suppress(ValueError):  # promoted (or finished) meanwhile
                    await asyncio.to_thread(
                        guard.operate, ROLLOUT_NAME, "promote", actor="demo", reason=f"clean: {why}"
                    )
                    out.print(f"  shadow phase clean ({why}): the listing is now a guarded canary")
            if phase in ("promote", "done"):
                return
            if phase == "differs" and not warned:
                out.print(f"  shadow found differences ({why}): not promoting; see its page")
                warned = True
            await _until(stop, 1.0)
    except Exception:  # the demo's services keep running without the automatic promotion
        logger.exception("demo.promote_failed", extra={"rollout": ROLLOUT_NAME})
    finally:
        promoted.set()


async def _break_later(
    store: FlagStore, seconds: float, stop: asyncio.Event, promoted: asyncio.Event, out: Console
) -> None:
    await _until(stop, seconds)
    waiting = [asyncio.create_task(e.wait()) for e in (stop, promoted)]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in waiting:
        task.cancel()
    if not stop.is_set():
        await asyncio.to_thread(
            store.set_enabled, BREAK_FLAG, True, actor="demo", reason="--break-candidate"
        )
        out.print(
            f"  injected a fault into the candidate ({BREAK_FLAG} on): "
            "watch the guard roll it back on the Rollouts page"
        )


async def _main(
    settings: Settings,
    *,
    traffic: bool,
    out: Console,
    break_candidate: float | None = None,
    broker_url: str | None = None,
    break_jobs: bool = False,
) -> None:
    settings, read_key, admin_key = demo_settings(settings)
    engine = create_engine(settings=settings)
    upgrade(engine)
    # Every request the orders service answers, written in batches (demo_traffic_events).
    traffic_events = TrafficEvents(engine)
    relay = await asyncio.to_thread(
        start_relay, engine, broker_url=broker_url, delivered=DeliveredEvents()
    )
    store = FlagStore(engine)
    seed_flags(store)
    if break_jobs:
        store.set_enabled(BREAK_JOBS_FLAG, True, actor="demo", reason="--break-jobs")
    flags = FlagClient(store=store, poll_interval=0.5, overrides=settings.flag_overrides)
    flags.start()
    reporter = BreakerReporter(engine, service="orders", interval=1.0)
    reporter.start()
    # The catalogue cache's hits and misses, for the overview's cache card.
    cache_reporter = CacheReporter(engine, service="orders", interval=5.0)
    cache_reporter.start()
    agent = start_listing_rollout(engine, store, flags)
    agent.start()
    # The orders service's background jobs (order confirmations) and their worker.
    jobs = demo_jobs(flags)
    worker = jobs.worker(engine, concurrency=8)
    worker_task = asyncio.create_task(worker.run())

    plane_port, orders_port = settings.port, settings.port + 1
    servers = [
        _Server(
            uvicorn.Config(
                create_app(settings, engine=engine, migrate=False),
                host=settings.host,
                port=plane_port,
                log_level="warning",
                log_config=None,  # keep the logging `safeship demo` configured
                proxy_headers=False,  # client addresses: SAFESHIP_TRUSTED_PROXIES only
            )
        ),
        _Server(
            uvicorn.Config(
                traffic_events.middleware(
                    create_orders_app(
                        engine, flags, listing=next(iter(agent.rollouts.values())), jobs=jobs
                    )
                ),
                host=settings.host,
                port=orders_port,
                log_level="warning",
                log_config=None,
                proxy_headers=False,
            )
        ),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):  # a port in use ends serve() early
            stop.set()
            break
        await asyncio.sleep(0.05)
    if not stop.is_set():
        _banner(out, settings.host, plane_port, orders_port, read_key, admin_key, traffic)
    traffic_task = (
        asyncio.create_task(generate_traffic(f"http://{settings.host}:{orders_port}", stop))
        if traffic
        else None
    )
    promoted = asyncio.Event()
    promote_task = asyncio.create_task(promote_after_shadow(agent.guard, stop, promoted, out))
    breaker_task = (
        asyncio.create_task(_break_later(store, break_candidate, stop, promoted, out))
        if break_candidate is not None
        else None
    )
    await stop.wait()
    out.print("\nstopping…")
    await promote_task
    if breaker_task is not None:
        await breaker_task
    if traffic_task is not None:
        await traffic_task
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(traffic_events.close)  # the events still buffered are written
    worker.stop()
    await asyncio.gather(worker_task, return_exceptions=True)
    relay.stop()
    agent.close()
    reporter.close()
    cache_reporter.close()
    flags.close()
    engine.dispose()
    if not all(s.started for s in servers):
        raise OSError(f"could not start the demo: is port {plane_port} or {orders_port} in use?")


def _banner(
    out: Console,
    host: str,
    plane_port: int,
    orders_port: int,
    read_key: str,
    admin_key: str,
    traffic: bool,
) -> None:
    out.print("[bold]safeship demo is running[/]  (Ctrl-C to stop)\n")
    out.print(f"  dashboard      http://{host}:{plane_port}/", highlight=False)
    out.print(f"  API docs       http://{host}:{plane_port}/api/docs", highlight=False)
    out.print(f"  orders service http://{host}:{orders_port}/orders", highlight=False)
    out.print(f"\n  read key   {read_key}\n  admin key  {admin_key}\n", highlight=False)
    out.print("  traffic: " + ("generating ~20 requests/s" if traffic else "off (--no-traffic)"))
