"""One event no broker will take (too large, headers NATS refuses, a row written to the
table by hand that cannot be decoded) is that event's problem alone: it goes to the dead
letters, the rest of its batch is delivered once, nothing is published twice, and a broker
that answers nothing counts no attempt against the events."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.outbox import CallbackSink, Event, NewEvent, Relay, RelayConfig, admin, stage_many
from safeship.outbox import stage as stage_one
from safeship.outbox._model import partition_of
from safeship.outbox.sinks.nats import NatsSink
from safeship.resilience import Constant

from .conftest import PrivateNats, read_stream, wait_until
from .faults import pending

FAST = RelayConfig(
    poll_interval=0.05, lease_ttl=1.0, max_attempts=3, backoff=Constant(delay_seconds=0.05)
)
BIG = 5_000_000


async def wait_for(condition: Any, *, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s: {message}")
        await asyncio.sleep(0.02)


def normal(key: str, n: int = 0) -> NewEvent:
    return NewEvent(
        aggregate_type="order", aggregate_id=key, type="changed", payload={"k": key, "n": n}
    )


def insert_raw(conn: sa.Connection, key: str, headers: str, *, pg: bool) -> uuid.UUID:
    """A row written to the table directly, bypassing stage()'s checks."""
    event_id = uuid.uuid4()
    cast = "CAST(:h AS jsonb)" if pg else ":h"
    conn.execute(
        sa.text(
            "INSERT INTO safeship_outbox (id, aggregatetype, aggregateid, type, payload, "
            f"headers, partition, created_at) VALUES (:id, 'order', :k, 'changed', '{{}}', {cast}, "
            ":p, CURRENT_TIMESTAMP)"
        ),
        {"id": event_id if pg else event_id.hex, "k": key, "h": headers, "p": partition_of(key)},
    )
    return event_id


def dead_ids(engine: sa.Engine) -> dict[uuid.UUID, str]:
    rows = admin.peek(engine, where="dead", limit=100)
    return {uuid.UUID(str(r.id)): r.last_error or "" for r in rows}


@pytest.mark.postgres
@pytest.mark.nats
async def test_a_5mb_event_is_dead_lettered_and_the_rest_of_its_batch_is_delivered_once(
    pg_url: str, pg_engine: sa.Engine, nats_url: str, stream: tuple[str, Any]
) -> None:
    name, js = stream
    with pg_engine.begin() as conn:
        stage_many(conn, [normal(f"a{i}") for i in range(20)])  # before it, same batch
        big = stage_one(
            conn,
            aggregate_type="order",
            aggregate_id="big",
            type="changed",
            payload={"k": "big", "blob": "x" * BIG},
            max_event_bytes=BIG + 10_000,
        )
        stage_many(conn, [normal(f"b{i}") for i in range(100)])  # after it, other keys
        stage_many(conn, [normal("big", 1)])  # after it, its own key
    sink = NatsSink(nats_url, subject=name + ".{aggregate_type}.{type}")
    relay = Relay(pg_url, sink, config=FAST)
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: pending(pg_engine) == 0, seconds=30, message="outbox drained")
    finally:
        relay.stop()
        await task
    ids = [m.headers["Nats-Msg-Id"] for m in await read_stream(js, name)]
    assert len(ids) == len(set(ids)) == 121 and str(big) not in ids
    assert sink.duplicates == 0  # nothing before the big event was published again
    dead = dead_ids(pg_engine)
    assert list(dead) == [big] and "max_payload" in dead[big]


@pytest.mark.postgres
@pytest.mark.nats
async def test_rows_nats_cannot_encode_are_dead_lettered_and_others_flow(
    pg_url: str, pg_engine: sa.Engine, nats_url: str, stream: tuple[str, Any]
) -> None:
    name, js = stream
    with pg_engine.begin() as conn:
        stage_many(conn, [normal(f"a{i}") for i in range(10)])
        bad_name = insert_raw(conn, "bad1", '{"bad header": "x"}', pg=True)
        not_object = insert_raw(conn, "bad2", "[1, 2]", pg=True)
        crlf = insert_raw(conn, "bad3", '{"x": "a\\r\\nInjected: 1"}', pg=True)
        stage_many(conn, [normal(f"b{i}") for i in range(10)])
    sink = NatsSink(nats_url, subject=name + ".{aggregate_type}.{type}")
    relay = Relay(pg_url, sink, config=FAST)
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: pending(pg_engine) == 0, seconds=30, message="outbox drained")
    finally:
        relay.stop()
        await task
    ids = [m.headers["Nats-Msg-Id"] for m in await read_stream(js, name)]
    assert len(ids) == len(set(ids)) == 20
    dead = dead_ids(pg_engine)
    assert set(dead) == {bad_name, not_object, crlf}
    assert "not a str-to-str object" in dead[not_object]
    assert "control character" in dead[crlf]


def test_a_stored_row_that_cannot_be_decoded_is_dead_lettered_on_sqlite(
    sqlite_engine: sa.Engine,
) -> None:
    delivered: list[str] = []

    def handler(event: Event) -> None:
        delivered.append(event.aggregate_id)

    with sqlite_engine.begin() as conn:
        stage_many(conn, [normal("a"), normal("b")])
        broken = insert_raw(conn, "c", "this is not JSON", pg=False)
        stage_many(conn, [normal("d")])
    running = Relay(sqlite_engine, CallbackSink(handler), config=FAST).start_thread()
    try:
        wait_until(lambda: pending(sqlite_engine) == 0, timeout=20, message="drained")
    finally:
        running.stop()
    assert sorted(delivered) == ["a", "b", "d"]
    dead = dead_ids(sqlite_engine)
    assert list(dead) == [broken] and "cannot be decoded" in dead[broken]


@pytest.mark.postgres
async def test_a_broker_that_answers_nothing_counts_no_attempt(
    pg_url: str, pg_engine: sa.Engine, private_nats: PrivateNats
) -> None:
    import nats

    nc = await nats.connect(private_nats.url)
    name = "S" + uuid.uuid4().hex[:8].upper()
    await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
    await nc.close()
    sink = NatsSink(private_nats.url, subject=name + ".{aggregate_type}.{type}", ack_timeout=0.3)
    relay = Relay(pg_url, sink, config=FAST)
    task = asyncio.create_task(relay.run())
    assert private_nats.proc is not None
    try:
        await wait_for(lambda: relay._sink_open, seconds=20, message="sink open")
        os.kill(private_nats.proc.pid, signal.SIGSTOP)  # connected, but answers nothing
        try:
            with pg_engine.begin() as conn:
                stage_many(conn, [normal(f"k{i}") for i in range(5)])
            # Each try is a whole-batch failure: without a single ack it is the broker.
            await wait_for(
                lambda: relay.sink_failures >= 2 * FAST.max_attempts,
                seconds=60,
                message="several failed tries",
            )
            with pg_engine.connect() as conn:
                attempts = conn.execute(
                    sa.text("SELECT coalesce(max(attempts), 0) FROM safeship_outbox")
                ).scalar_one()
            assert attempts == 0 and admin.stats(pg_engine).dead == 0
        finally:
            os.kill(private_nats.proc.pid, signal.SIGCONT)
        await wait_for(lambda: pending(pg_engine) == 0, seconds=60, message="delivered after")
    finally:
        relay.stop()
        await task
    assert admin.stats(pg_engine).dead == 0
