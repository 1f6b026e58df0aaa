"""Lease renewal: one timer per event loop renews every first run in progress on time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading

import pytest

from safeship.idempotency import IdempotencyStoreError
from safeship.idempotency._lease import Leases, leases
from tests.idempotency.lease_support import RenewCounter, until


async def test_each_lease_is_renewed_every_third_of_its_length() -> None:
    store = RenewCounter()
    held = leases()
    start = asyncio.get_running_loop().time()
    slow = held.hold(store, "slow", "t", lease=3.0, unknown_ttl=1)  # first due at 1 s
    fast = held.hold(store, "fast", "t", lease=0.15, unknown_ttl=1)  # every 0.05 s
    await until(lambda: len(store.renewals.get("fast", [])) >= 6)
    held.drop(fast)
    held.drop(slow)
    times = store.renewals["fast"]
    assert times[0] - start >= 0.05 - 0.01
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.0375 - 0.002 for gap in gaps), gaps  # at most a quarter period early
    assert all(gap < 0.15 for gap in gaps), gaps  # always before the lease ran out
    assert "slow" not in store.renewals  # its first renewal was not due yet


async def test_a_dropped_lease_is_not_renewed_and_its_renewal_under_way_is_cancelled() -> None:
    store = RenewCounter(delay=10)
    held = leases()
    lease = held.hold(store, "k", "t", lease=0.06, unknown_ttl=1)
    await until(lambda: "k" in store.renewals)
    held.drop(lease)
    await until(lambda: store.cancelled == 1)
    count = len(store.renewals["k"])
    await asyncio.sleep(0.1)  # five renewal periods: none comes
    assert len(store.renewals["k"]) == count == 1


async def test_a_slow_renewal_is_not_started_again_while_it_runs() -> None:
    store = RenewCounter(delay=0.2)
    held = leases()
    lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)  # due every 0.01 s
    await asyncio.sleep(0.25)
    held.drop(lease)
    assert len(store.renewals["k"]) <= 2  # one at a time, not one per period


async def test_a_lost_lease_stops_renewing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = RenewCounter(answer=False)
    held = leases()
    with caplog.at_level(logging.WARNING, "safeship.idempotency"):
        lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
        await until(lambda: "idempotency.lease_lost" in caplog.messages)
        await asyncio.sleep(0.05)
    held.drop(lease)
    assert len(store.renewals["k"]) == 1
    assert len(held) == 0


async def test_a_store_error_while_renewing_is_retried_at_the_next_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RenewCounter(answer=IdempotencyStoreError("down"))
    held = leases()
    with caplog.at_level(logging.WARNING, "safeship.idempotency"):
        lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
        await until(lambda: len(store.renewals.get("k", [])) >= 3)
    held.drop(lease)
    assert caplog.messages.count("idempotency.renew_failed") >= 2


async def test_with_nothing_held_no_timer_is_left_set() -> None:
    store = RenewCounter()
    held = leases()
    lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
    await until(lambda: "k" in store.renewals)
    held.drop(lease)
    await until(lambda: held._at == math.inf)  # it fired once more, found nothing, stayed off
    assert len(held) == 0


async def test_thousands_of_short_runs_leave_nothing_behind() -> None:
    store = RenewCounter()
    held = leases()
    for i in range(5000):
        held.drop(held.hold(store, f"k{i}", "t", lease=30, unknown_ttl=1))
    assert len(held) == 0
    assert store.renewals == {}
    scheduled = len(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]
    assert scheduled < 10  # one timer for the loop, not one per run


def test_each_event_loop_renews_its_own_leases() -> None:
    stores = [RenewCounter(), RenewCounter()]
    seen: list[Leases] = []

    def run(store: RenewCounter) -> None:
        async def main() -> None:
            held = leases()
            seen.append(held)
            assert held.loop is asyncio.get_running_loop()
            lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
            await until(lambda: len(store.renewals.get("k", [])) >= 3)
            held.drop(lease)

        asyncio.run(main())

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(len(store.renewals["k"]) >= 3 for store in stores)
    assert len(seen) == 2 and seen[0] is not seen[1]
