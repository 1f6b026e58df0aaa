"""The relay on embedded SQLite with the in-process sink: delivery, per-key order,
backoff, dead letters and retrying them."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import pytest
import sqlalchemy as sa

from safeship.outbox import (
    CallbackSink,
    Event,
    NewEvent,
    PermanentError,
    Relay,
    RelayConfig,
    RelayThread,
    admin,
    stage,
    stage_many,
)
from safeship.resilience import Constant

from .conftest import wait_until

FAST = RelayConfig(poll_interval=0.02, max_attempts=3, backoff=Constant(delay_seconds=0.05))


class Recorder:
    def __init__(self, fail_key: str | None = None, permanent: bool = False) -> None:
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.lock = threading.Lock()
        self.fail_key = fail_key
        self.permanent = permanent
        self.failures = 0

    def __call__(self, event: Event) -> None:
        if event.aggregate_id == self.fail_key:
            self.failures += 1
            raise (PermanentError if self.permanent else RuntimeError)("poison")
        with self.lock:
            self.by_key[event.aggregate_id].append(event.payload_json()["n"])

    def count(self) -> int:
        return sum(len(v) for v in self.by_key.values())


def _stage(engine: sa.Engine, keys: int, per_key: int) -> None:
    with engine.begin() as conn:
        stage_many(
            conn,
            [
                NewEvent(
                    aggregate_type="order", aggregate_id=f"k{k}", type="created", payload={"n": n}
                )
                for n in range(per_key)
                for k in range(keys)
            ],
        )


def test_sqlite_end_to_end_delivers_everything_in_order_per_key(sqlite_engine: sa.Engine) -> None:
    _stage(sqlite_engine, keys=7, per_key=60)
    recorder = Recorder()
    running = Relay(sqlite_engine, CallbackSink(recorder), config=FAST).start_thread()
    try:
        wait_until(lambda: recorder.count() == 420, timeout=20, message="all delivered")
        with sqlite_engine.begin() as conn:
            stage(conn, aggregate_type="order", aggregate_id="k0", type="paid", payload={"n": 60})
        wait_until(lambda: recorder.count() == 421, timeout=10, message="late event delivered")
    finally:
        running.stop()
    assert all(v == list(range(len(v))) for v in recorder.by_key.values())
    assert admin.stats(sqlite_engine).pending == 0


def test_poison_event_dead_letters_after_max_attempts_and_other_keys_flow(
    sqlite_engine: sa.Engine,
) -> None:
    _stage(sqlite_engine, keys=4, per_key=5)
    recorder = Recorder(fail_key="k2")
    running = Relay(sqlite_engine, CallbackSink(recorder), config=FAST).start_thread()
    try:
        wait_until(lambda: admin.stats(sqlite_engine).dead == 5, timeout=30, message="k2 dead")
        wait_until(lambda: recorder.count() == 15, timeout=10, message="others delivered")
        dead = admin.peek(sqlite_engine, where="dead", limit=10)
        assert {d.aggregate_id for d in dead} == {"k2"}
        assert dead[0].attempts == 3 and "poison" in (dead[0].last_error or "")
        recorder.fail_key = None
        moved = admin.retry(sqlite_engine, match=admin.Filter(aggregate_id="k2"))
        assert moved == 5
        wait_until(lambda: recorder.count() == 20, timeout=10, message="retried delivered")
    finally:
        running.stop()
    assert recorder.by_key["k2"] == [0, 1, 2, 3, 4]
    assert admin.stats(sqlite_engine).dead == 0


def test_permanent_failure_dead_letters_at_once(sqlite_engine: sa.Engine) -> None:
    _stage(sqlite_engine, keys=2, per_key=1)
    recorder = Recorder(fail_key="k0", permanent=True)
    running = Relay(sqlite_engine, CallbackSink(recorder), config=FAST).start_thread()
    try:
        wait_until(lambda: admin.stats(sqlite_engine).dead == 1, timeout=10, message="dead")
        wait_until(lambda: recorder.count() == 1, timeout=10, message="other delivered")
    finally:
        running.stop()
    assert recorder.failures == 1


def test_purge_deletes_only_what_was_confirmed(sqlite_engine: sa.Engine) -> None:
    _stage(sqlite_engine, keys=1, per_key=3)
    recorder = Recorder(fail_key="k0", permanent=True)
    running = Relay(sqlite_engine, CallbackSink(recorder), config=FAST).start_thread()
    try:
        wait_until(lambda: admin.stats(sqlite_engine).dead == 3, timeout=10, message="dead")
    finally:
        running.stop()
    import pytest

    with pytest.raises(admin.PurgeMismatchError, match="3 events match"):
        admin.purge(sqlite_engine, expected=2)
    assert admin.purge(sqlite_engine, expected=3) == 3


def test_archive_mode_keeps_published_events(sqlite_engine: sa.Engine) -> None:
    _stage(sqlite_engine, keys=2, per_key=3)
    recorder = Recorder()
    config = RelayConfig(poll_interval=0.02, archive_seconds=3600)
    running = Relay(sqlite_engine, CallbackSink(recorder), config=config).start_thread()
    try:
        wait_until(lambda: recorder.count() == 6, timeout=10, message="delivered")
        wait_until(lambda: admin.stats(sqlite_engine).pending == 0, timeout=10, message="moved")
    finally:
        running.stop()
    with sqlite_engine.connect() as conn:
        archived = conn.execute(sa.text("SELECT count(*) FROM safeship_outbox_archive")).scalar()
    assert archived == 6


def test_relay_waits_for_a_sink_that_cannot_open_yet(sqlite_engine: sa.Engine) -> None:
    class Flaky(CallbackSink):
        opens = 0

        async def open(self) -> None:
            Flaky.opens += 1
            if Flaky.opens < 3:
                raise ConnectionError("broker not up yet")

    _stage(sqlite_engine, keys=1, per_key=2)
    recorder = Recorder()
    running = Relay(sqlite_engine, Flaky(recorder), config=FAST).start_thread()
    try:
        wait_until(lambda: recorder.count() == 2, timeout=10, message="delivered after opening")
    finally:
        running.stop()
    assert Flaky.opens == 3


def test_building_a_relay_thread_starts_nothing_until_start(sqlite_engine: sa.Engine) -> None:
    _stage(sqlite_engine, keys=1, per_key=3)
    recorder = Recorder()
    thread = RelayThread(Relay(sqlite_engine, CallbackSink(recorder), config=FAST))
    assert not thread.alive
    assert admin.stats(sqlite_engine).pending == 3  # nothing ran
    thread.stop()  # stopping one never started is a no-op, not an error
    with RelayThread(Relay(sqlite_engine, CallbackSink(recorder), config=FAST)) as running:
        assert running.alive
        wait_until(lambda: recorder.count() == 3, timeout=20, message="delivered")
        with pytest.raises(RuntimeError, match="already started"):
            running.start()
    assert not running.alive


async def test_a_claim_read_while_a_batch_fails_holds_the_key_back(
    sqlite_engine: sa.Engine,
) -> None:
    """The next claim is read while k0's first event is in flight and returns after that
    batch failed and rescheduled it: the later event of k0 it offers waits its turn."""
    _stage(sqlite_engine, keys=1, per_key=2)
    delivered: list[int] = []
    second_claim_read = asyncio.Event()
    raced: list[bool] = []

    async def handler(event: Event) -> None:
        n = event.payload_json()["n"]
        if n == 0 and not raced:
            await asyncio.wait_for(second_claim_read.wait(), 10)
            raced.append(True)
            raise RuntimeError("first attempt fails")
        delivered.append(n)

    config = RelayConfig(
        batch_size=1, pipeline_depth=2, poll_interval=0.02, backoff=Constant(delay_seconds=0.05)
    )
    relay = Relay(sqlite_engine, CallbackSink(handler), config=config)
    real_claim = relay._store.claim

    async def claim(partitions: frozenset[int], limit: int, exclude: list[int]) -> list[Event]:
        events = await real_claim(partitions, limit, exclude)
        if exclude and not second_claim_read.is_set():
            assert [e.payload_json()["n"] for e in events] == [1]  # read before the failure
            second_claim_read.set()
            await asyncio.wait(list(relay._tasks))  # k0's batch fails and ends first
            assert not relay._inflight_keys
        return events

    relay._store.claim = claim  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(1000):
            if len(delivered) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        relay.stop()
        await task
    assert raced == [True]
    assert delivered == [0, 1]
