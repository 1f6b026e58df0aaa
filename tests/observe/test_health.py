"""Health registry: statuses, health+json shape, timeouts, caching, shared runs."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

import pytest

from safeship.observe.health import (
    HEALTH_MEDIA_TYPE,
    Check,
    CheckResult,
    HealthRegistry,
    disk_check,
    event_loop_lag_check,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_media_type_constant() -> None:
    assert HEALTH_MEDIA_TYPE == "application/health+json"


async def test_empty_registry_passes_every_kind() -> None:
    registry = HealthRegistry()
    for kind in ("liveness", "readiness", "startup"):
        report = await registry.run(kind)
        assert report.status == "pass"
        assert report.http_status == 200


async def test_sync_and_async_checks_pass_with_observed_value() -> None:
    registry = HealthRegistry()

    async def async_ok() -> str:
        return "fine"

    registry.add("sync", lambda: None)
    registry.add("async", async_ok)
    report = await registry.run("readiness")
    assert report.status == "pass"
    assert report.checks["async"].observed_value == "fine"
    assert report.checks["sync"].observed_value is None


async def test_raising_critical_check_fails_with_503() -> None:
    registry = HealthRegistry()

    def broken() -> None:
        raise ConnectionError("refused")

    registry.add("db", broken)
    report = await registry.run("readiness")
    assert report.status == "fail"
    assert report.http_status == 503
    assert report.checks["db"].output == "ConnectionError: refused"


async def test_non_critical_failure_only_warns() -> None:
    registry = HealthRegistry()

    def broken() -> None:
        raise RuntimeError("cache down")

    registry.add("cache", broken, critical=False)
    registry.add("db", lambda: None)
    report = await registry.run("readiness")
    assert report.status == "warn"
    assert report.http_status == 200


async def test_check_result_warn_is_passed_through() -> None:
    registry = HealthRegistry()
    registry.add("queue", lambda: CheckResult(status="warn", output="backlog 900"))
    report = await registry.run("readiness")
    assert report.status == "warn"
    assert report.checks["queue"].output == "backlog 900"


async def test_kinds_select_checks() -> None:
    registry = HealthRegistry()

    def broken() -> None:
        raise RuntimeError("x")

    registry.add("db", broken, kinds=("readiness", "startup"))
    assert (await registry.run("liveness")).status == "pass"
    assert (await registry.run("startup")).status == "fail"


async def test_slow_async_check_times_out_without_hanging() -> None:
    registry = HealthRegistry()

    async def stuck() -> None:
        await asyncio.Event().wait()

    registry.add("slow", stuck, timeout=0.05)
    started = time.perf_counter()
    report = await registry.run("readiness")
    assert time.perf_counter() - started < 1.0
    assert report.checks["slow"].output == "timed out after 0.05s"
    assert report.status == "fail"


async def test_check_ignoring_cancellation_cannot_hang_the_probe() -> None:
    registry = HealthRegistry()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    registry.add("stubborn", stubborn, timeout=0.05)
    report = await asyncio.wait_for(registry.run("readiness"), 2.0)
    assert report.status == "fail"
    release.set()
    await asyncio.sleep(0)


async def test_blocking_sync_check_times_out_and_loop_stays_free() -> None:
    registry = HealthRegistry()
    release = threading.Event()
    registry.add("blocking", lambda: release.wait(5), timeout=0.05)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    report = await registry.run("readiness")
    task.cancel()
    release.set()
    assert report.checks["blocking"].output == "timed out after 0.05s"
    assert ticks > 5  # the event loop kept running while the check blocked a thread


async def test_results_are_cached_for_ttl() -> None:
    clock = FakeClock()
    registry = HealthRegistry(clock=clock)
    calls = 0

    def counted() -> None:
        nonlocal calls
        calls += 1

    registry.add("db", counted, cache_ttl=5.0)
    await registry.run("readiness")
    await registry.run("readiness")
    assert calls == 1
    clock.now += 5.1
    await registry.run("readiness")
    assert calls == 2


async def test_concurrent_probes_share_one_inflight_run() -> None:
    registry = HealthRegistry()
    calls = 0
    gate = asyncio.Event()

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    registry.add("db", slow, cache_ttl=0)
    probes = [asyncio.create_task(registry.run("readiness")) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gate.set()
    reports = await asyncio.gather(*probes)
    assert calls == 1
    assert all(r.status == "pass" for r in reports)


async def test_to_dict_has_health_json_shape() -> None:
    registry = HealthRegistry(service_id="orders", version="1.2.0")
    registry.add("db", lambda: "ok", component_type="datastore")
    body = (await registry.run("readiness")).to_dict()
    assert body["status"] == "pass"
    assert body["serviceId"] == "orders"
    entry = body["checks"]["db"][0]
    assert entry["status"] == "pass"
    assert entry["observedValue"] == "ok"
    assert entry["componentType"] == "datastore"
    assert entry["time"].endswith("Z")
    datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))


async def test_mark_not_ready_fails_readiness_only() -> None:
    registry = HealthRegistry()
    registry.mark_not_ready("draining")
    readiness = await registry.run("readiness")
    assert readiness.http_status == 503
    assert readiness.to_dict()["output"] == "draining"
    assert (await registry.run("liveness")).status == "pass"
    registry.mark_ready()
    assert (await registry.run("readiness")).status == "pass"


def test_bad_check_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Check(name="x", fn=lambda: None, timeout=0)
    with pytest.raises(ValueError, match="kinds"):
        Check(name="x", fn=lambda: None, kinds=frozenset({"ready"}))
    with pytest.raises(ValueError, match="status"):
        CheckResult(status="ok")  # type: ignore[arg-type]
    registry = HealthRegistry()
    registry.add("a", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", lambda: None)


async def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        await HealthRegistry().run("ready")


async def test_disk_check_passes_and_fails_by_threshold(tmp_path: object) -> None:
    registry = HealthRegistry()
    registry.add("disk-ok", disk_check(str(tmp_path), 1))
    registry.add("disk-full", disk_check(str(tmp_path), 1 << 62))
    report = await registry.run("readiness")
    assert report.checks["disk-ok"].status == "pass"
    assert report.checks["disk-full"].status == "fail"
    assert report.checks["disk-ok"].observed_unit == "bytes"


async def test_event_loop_lag_check_passes_on_idle_loop() -> None:
    result = await event_loop_lag_check(0.5)()
    assert result.status == "pass"
    assert result.observed_value < 0.5


async def test_event_loop_lag_check_fails_on_blocked_loop() -> None:
    check = event_loop_lag_check(0.01)
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, 0.05)  # a callback that blocks the loop, queued first
    result = await check()
    assert result.status == "fail"
