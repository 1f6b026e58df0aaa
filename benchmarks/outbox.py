"""Transactional outbox: staging cost and relay throughput to NATS JetStream, with peers.

    python benchmarks/outbox.py [--quick]

Cases (one JSON line each on stdout, a summary on stderr):
  stage-single  events/s, one event per transaction: safeship ``stage()`` vs ``baseline``
                (a bare INSERT of the same columns on the same SQLAlchemy connection)
  stage-bulk    events/s, 1,000 events per transaction: ``stage_many()`` (unnest) vs
                ``baseline`` (COPY)
  stage-overhead  ratio of the two stage-single rates (safeship / baseline)
  relay-1proc   events/s end to end (committed backlog -> JetStream ack -> row deleted), one
                relay process: safeship vs ``baseline`` (a naive loop: claim 500 with SKIP
                LOCKED, publish_async each, gather acks, delete, commit)
  relay-2proc   the same with two processes
  latency-p50 / latency-p99  ms from commit to a subscriber receiving the event, at a fixed
                offered load, through one safeship relay
  worker        jobs/s for procrastinate (defer + worker), when it can be imported from
                SAFESHIP_BENCH_PROCRASTINATE (a ``pip install --target`` directory);
                otherwise skipped with the reason on stderr

Needs PostgreSQL and NATS JetStream on 127.0.0.1 (throw-away databases and streams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NATS_URL = "nats://127.0.0.1:4222"
KEYS = 1000


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": "outbox", "case": case, "impl": impl, "value": round(value, 3), "unit": unit}
    print(json.dumps(line), flush=True)
    print(f"{case:16} {impl:14} {value:12,.1f} {unit}", file=sys.stderr)


class Database:
    """A throw-away database migrated to safeship's schema."""

    def __init__(self) -> None:
        from safeship.db import create_engine, upgrade

        self.admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        self.name = f"safeship_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"
        self.engine = create_engine(self.url)
        upgrade(self.engine)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE safeship_outbox"))
            conn.execute(sa.text("DELETE FROM safeship_outbox_relays"))
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE safeship_outbox"))

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM safeship_outbox")).scalar_one())

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


# -- staging ---------------------------------------------------------------------------

_BARE = sa.text(
    "INSERT INTO safeship_outbox (id, aggregatetype, aggregateid, type, payload, headers, "
    "partition, created_at) VALUES (:id, :type, :key, :event, CAST(:payload AS jsonb), "
    "CAST(:headers AS jsonb), :partition, :created_at)"
)


def _payload(i: int) -> dict[str, Any]:
    return {"order": i, "total": 12.5, "currency": "EUR", "lines": [1, 2, 3]}


def _bare_params(i: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "id": uuid.uuid4(),
        "type": "order",
        "key": f"k{i % KEYS}",
        "event": "created",
        "payload": json.dumps(_payload(i)),
        "headers": None,
        "partition": 0,
        "created_at": datetime.now(UTC),
    }


def stage_single(db: Database, n: int, impl: str) -> float:
    from safeship.outbox import stage

    started = time.perf_counter()
    with db.engine.connect() as conn:
        for i in range(n):
            with conn.begin():
                if impl == "safeship":
                    stage(
                        conn,
                        aggregate_type="order",
                        aggregate_id=f"k{i % KEYS}",
                        type="created",
                        payload=_payload(i),
                    )
                else:
                    conn.execute(_BARE, _bare_params(i))
    return n / (time.perf_counter() - started)


def stage_bulk(db: Database, n: int, impl: str, batch: int = 1000) -> float:
    from safeship.outbox import NewEvent, stage_many

    started = time.perf_counter()
    for start in range(0, n, batch):
        if impl == "safeship":
            events = [
                NewEvent(
                    aggregate_type="order",
                    aggregate_id=f"k{i % KEYS}",
                    type="created",
                    payload=_payload(i),
                )
                for i in range(start, start + batch)
            ]
            with db.engine.begin() as conn:
                stage_many(conn, events)
            continue
        with db.engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            with (
                raw.cursor() as cur,
                cur.copy(  # type: ignore[attr-defined]
                    "COPY safeship_outbox (id, aggregatetype, aggregateid, type, payload, "
                    "partition, created_at) FROM STDIN"
                ) as copy,
            ):
                now = time.time()
                for i in range(start, start + batch):
                    copy.write_row(
                        (
                            uuid.uuid4(),
                            "order",
                            f"k{i % KEYS}",
                            "created",
                            json.dumps(_payload(i)),
                            0,
                            _ts(now),
                        )
                    )
    return n / (time.perf_counter() - started)


def _ts(now: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(now, UTC)


def fill(db: Database, n: int) -> None:
    from safeship.outbox import NewEvent, stage_many

    db.reset()
    for start in range(0, n, 5000):
        events = [
            NewEvent(
                aggregate_type="order",
                aggregate_id=f"k{i % KEYS}",
                type="created",
                payload=_payload(i),
            )
            for i in range(start, min(n, start + 5000))
        ]
        with db.engine.begin() as conn:
            stage_many(conn, events)


# -- relay processes -------------------------------------------------------------------


async def run_safeship_relay(url: str, subject: str) -> None:
    import signal

    from safeship.outbox import Relay, RelayConfig
    from safeship.outbox.sinks.nats import NatsSink

    relay = Relay(
        url, NatsSink(NATS_URL, subject=subject), config=RelayConfig(batch_size=1000, lease_ttl=2.0)
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.stop)
    print("ready", flush=True)
    await relay.run()


_NAIVE_CLAIM = (
    "SELECT seq, id, aggregatetype, type, payload::text FROM safeship_outbox "
    "ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED"
)


async def run_naive_relay(url: str, subject: str) -> None:
    import asyncpg
    import nats

    from safeship.outbox._store_pg import asyncpg_dsn

    nc = await nats.connect(NATS_URL)
    js = nc.jetstream(publish_async_max_pending=10_000)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    print("ready", flush=True)
    while True:
        async with conn.transaction():
            rows = await conn.fetch(_NAIVE_CLAIM)
            if not rows:
                await asyncio.sleep(0.05)
                continue
            futures = [
                await js.publish_async(
                    subject.format(aggregate_type=r[2], type=r[3]),
                    r[4].encode(),
                    headers={"Nats-Msg-Id": str(r[1])},
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(
                "DELETE FROM safeship_outbox WHERE seq = ANY($1::bigint[])", [r[0] for r in rows]
            )


def relay_throughput(db: Database, n: int, impl: str, procs: int) -> float:
    import nats

    stream = "BENCH" + uuid.uuid4().hex[:8].upper()
    subject = stream + ".{aggregate_type}.{type}"

    async def stream_op(create: bool) -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        if create:
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        else:
            await js.delete_stream(stream)
        await nc.close()

    fill(db, n)
    asyncio.run(stream_op(True))
    role = "relay" if impl == "safeship" else "naive"
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", role, db.url, subject],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    while db.pending() > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.terminate()
        worker.communicate(timeout=20)
    asyncio.run(stream_op(False))
    return n / elapsed


# -- latency ---------------------------------------------------------------------------


def latency(db: Database, rate: int, seconds: float) -> tuple[float, float]:
    """Stage ``rate`` events/s for ``seconds`` (each stamped with its commit time) while
    one relay publishes; a core NATS subscriber records commit -> receive."""
    import threading

    from safeship.outbox import stage

    db.reset()
    stream = "LAT" + uuid.uuid4().hex[:8].upper()
    samples: list[float] = []

    async def consume(stop: asyncio.Event) -> None:
        import nats

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])

        async def on_msg(msg: Any) -> None:
            sent = json.loads(msg.data)["t"]
            samples.append((time.time() - sent) * 1000)

        await nc.subscribe(f"{stream}.>", cb=on_msg)
        ready.set()
        await stop.wait()
        await nc.flush()
        await js.delete_stream(stream)
        await nc.close()

    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    consumer = threading.Thread(target=lambda: loop.run_until_complete(consume(stop)), daemon=True)
    consumer.start()
    ready.wait(10)
    relay = subprocess.Popen(
        [sys.executable, __file__, "--role", "relay", db.url, stream + ".{aggregate_type}.{type}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
    total = int(rate * seconds)
    started = time.perf_counter()
    with db.engine.connect() as conn:
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with conn.begin():
                stage(
                    conn,
                    aggregate_type="order",
                    aggregate_id=f"k{i % KEYS}",
                    type="created",
                    payload={"t": 0},
                )
                conn.execute(
                    sa.text(
                        "UPDATE safeship_outbox SET payload = jsonb_build_object('t', "
                        "extract(epoch FROM clock_timestamp())) WHERE seq = lastval()"
                    )
                )
    deadline = time.monotonic() + 30
    while len(samples) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.terminate()
    relay.communicate(timeout=20)
    loop.call_soon_threadsafe(stop.set)
    consumer.join(10)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


# -- procrastinate ---------------------------------------------------------------------


def procrastinate_worker(db: Database, n: int) -> float | None:
    target = os.environ.get("SAFESHIP_BENCH_PROCRASTINATE", "/tmp/safeship-bench-procrastinate")
    if not os.path.isdir(target):
        print(f"worker: skipped, procrastinate not installed in {target}", file=sys.stderr)
        return None
    env = {**os.environ, "PYTHONPATH": target}
    result = subprocess.run(
        [sys.executable, __file__, "--role", "procrastinate", db.url, str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        print(
            f"worker: skipped, procrastinate failed: {result.stderr.strip()[-400:]}",
            file=sys.stderr,
        )
        return None
    return float(result.stdout.strip().splitlines()[-1])


def run_procrastinate(url: str, n: int) -> None:
    import procrastinate

    from safeship.outbox._store_pg import asyncpg_dsn

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=asyncpg_dsn(url)))
    done = 0

    @app.task(name="noop")
    def noop(i: int) -> None:
        nonlocal done
        done += 1

    async def main() -> float:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for i in range(n):
                await noop.defer_async(i=i)
            started = time.perf_counter()
            await app.run_worker_async(wait=False, concurrency=10, install_signal_handlers=False)
            return n / (time.perf_counter() - started)

    print(asyncio.run(main()))


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role == "relay":
        asyncio.run(run_safeship_relay(*options.args))
        return
    if options.role == "naive":
        asyncio.run(run_naive_relay(*options.args))
        return
    if options.role == "procrastinate":
        run_procrastinate(options.args[0], int(options.args[1]))
        return
    quick = options.quick
    db = Database()
    try:
        single, bulk, relay_n = (1500, 20_000, 20_000) if quick else (10_000, 200_000, 100_000)
        rates: dict[str, float] = {}
        for impl in ("baseline", "safeship") * 3:  # interleaved, best of three
            db.reset()
            rates[impl] = max(rates.get(impl, 0.0), stage_single(db, single, impl))
        for impl in ("baseline", "safeship"):
            emit("stage-single", impl, rates[impl], "events/s")
        emit("stage-overhead", "safeship", rates["baseline"] / rates["safeship"], "ratio")
        for impl in ("baseline", "safeship"):
            db.reset()
            emit("stage-bulk", impl, stage_bulk(db, bulk, impl), "events/s")
        for procs in (1, 2):
            for impl in ("baseline", "safeship"):
                emit(
                    f"relay-{procs}proc",
                    impl,
                    relay_throughput(db, relay_n, impl, procs),
                    "events/s",
                )
        p50, p99 = latency(db, rate=1000 if quick else 2000, seconds=3 if quick else 10)
        emit("latency-p50", "safeship", p50, "ms")
        emit("latency-p99", "safeship", p99, "ms")
        jobs = procrastinate_worker(db, 500 if quick else 3000)
        if jobs is not None:
            emit("worker", "procrastinate", jobs, "jobs/s")
    finally:
        db.drop()


if __name__ == "__main__":
    main()
