"""Background jobs: enqueue cost, throughput, latency and orphan rescue, against peers.

    python benchmarks/jobs.py [--quick] [--impl safeship,pgqueuer,procrastinate] [--case enqueue]

Cases (one JSON line each on stdout; impls ``safeship``, ``pgqueuer``, ``procrastinate``,
each with its own defaults and a throw-away PostgreSQL database):
  enqueue-single  jobs/s, one job per transaction
  enqueue-bulk    jobs/s, 1,000 jobs per transaction
  process-1proc   no-op jobs/s drained by one worker process (timed from "go" to empty)
  process-2proc   the same with two worker processes
  latency-p50 / latency-p99  ms from enqueue to the handler starting, at 10 jobs/s
  orphan-rescue   s from kill -9 of a worker mid-job to the job running again in a fresh
                  worker; ``null`` (with a note on stderr) when it did not run again within
                  the wait (40 s, 6.5 s with --quick)

Needs PostgreSQL on 127.0.0.1 (trust auth).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
IMPLS = ("safeship", "pgqueuer", "procrastinate")


def emit(case: str, impl: str, value: float | None, unit: str) -> None:
    line = {"bench": "jobs", "case": case, "impl": impl, "value": value, "unit": unit}
    print(json.dumps(line), flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- databases -------------------------------------------------------------------------


async def fresh_database(impl: str) -> str:
    import asyncpg

    name = f"bench_jobs_{impl}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    await install(impl, dsn)
    return dsn


async def drop_database(dsn: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    await admin.close()


async def install(impl: str, dsn: str) -> None:
    if impl == "safeship":
        from safeship.db import create_engine, upgrade

        engine = create_engine(dsn)
        upgrade(engine)
        engine.dispose()
    elif impl == "pgqueuer":
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        await Queries(AsyncpgDriver(conn)).install()
        await conn.close()
    else:
        app = procrastinate_app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()


PENDING = {
    "safeship": "SELECT count(*) FROM safeship_jobs",
    "pgqueuer": "SELECT count(*) FROM pgqueuer",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
}

# -- each impl's app -------------------------------------------------------------------


def safeship_jobs(record: Any = None, slow: bool = False) -> Any:
    from safeship.jobs import JobContext, Jobs

    jobs = Jobs()

    @jobs.task(name="noop")
    async def noop(ctx: JobContext, n: int = 0, t: float = 0.0) -> None:
        if record is not None:
            record(t, ctx.attempt)
        if slow and ctx.attempt == 1:
            await asyncio.sleep(3600)

    return jobs


def procrastinate_app(dsn: str, record: Any = None, slow: bool = False) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(n: int = 0, t: float = 0.0) -> None:
        if record is not None:
            record(t, 1)
        if slow:
            await asyncio.sleep(3600)

    return app


def pgqueuer_app(conn: Any, record: Any = None, slow: bool = False) -> Any:
    from pgqueuer import AsyncpgDriver, PgQueuer

    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        if record is not None:
            record(json.loads(job.payload or b"{}").get("t", 0.0), 1)
        if slow:
            await asyncio.sleep(3600)

    return pgq


# -- enqueue ---------------------------------------------------------------------------


async def enqueuer(impl: str, dsn: str) -> tuple[Any, Any, Any]:
    """(one(i, t), bulk(count), close()) for ``impl``."""
    import asyncpg

    if impl == "safeship":
        jobs = safeship_jobs()
        conn = await asyncpg.connect(dsn)

        async def one(i: int, t: float = 0.0) -> None:
            # One statement outside a transaction block is its own transaction, as each
            # peer's enqueue is (inside the caller's transaction it adds BEGIN/COMMIT).
            await jobs.aenqueue(conn, "noop", {"n": i, "t": t})

        async def bulk(count: int) -> None:
            async with conn.transaction():
                await jobs.aenqueue_many(conn, "noop", [{"n": i} for i in range(count)])

        return one, bulk, conn.close
    if impl == "pgqueuer":
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        queries = Queries(AsyncpgDriver(conn))

        async def one(i: int, t: float = 0.0) -> None:
            await queries.enqueue("noop", json.dumps({"n": i, "t": t}).encode())

        async def bulk(count: int) -> None:
            payloads = [json.dumps({"n": i}).encode() for i in range(count)]
            await queries.enqueue(["noop"] * count, payloads, [0] * count)

        return one, bulk, conn.close
    app = procrastinate_app(dsn)
    await app.open_async()
    task = app.tasks["noop"]

    async def one(i: int, t: float = 0.0) -> None:
        await task.defer_async(n=i, t=t)

    async def bulk(count: int) -> None:
        await task.batch_defer_async(*[{"n": i} for i in range(count)])

    return one, bulk, app.close_async


async def bench_enqueue(databases: dict[str, str], single: int, batches: int) -> None:
    """Both enqueue cases, interleaved: each round times every impl once in turn, so a
    slow spell of a shared machine hits them all alike."""
    makers = {impl: await enqueuer(impl, dsn) for impl, dsn in databases.items()}
    spent_one = dict.fromkeys(makers, 0.0)
    spent_bulk = dict.fromkeys(makers, 0.0)
    try:
        for one, bulk, _ in makers.values():
            for i in range(20):
                await one(i)
            await bulk(1000)  # warm-up: statement preparation and first-touch costs
        rounds = 10
        for _ in range(rounds):
            for impl, (one, _, _) in makers.items():
                start = time.perf_counter()
                for i in range(single // rounds):
                    await one(i)
                spent_one[impl] += time.perf_counter() - start
        for _ in range(batches):
            for impl, (_, bulk, _) in makers.items():
                start = time.perf_counter()
                await bulk(1000)
                spent_bulk[impl] += time.perf_counter() - start
    finally:
        for _, _, close in makers.values():
            await close()
    for impl in makers:
        emit(
            "enqueue-single", impl, round(single // rounds * rounds / spent_one[impl], 1), "jobs/s"
        )
    for impl in makers:
        emit("enqueue-bulk", impl, round(batches * 1000 / spent_bulk[impl], 1), "jobs/s")


# -- worker processes ------------------------------------------------------------------


async def child(impl: str, dsn: str, slow: bool) -> None:
    """A worker process: prints "ready", waits for "go" on stdin, then runs until killed;
    prints "started" each time a handler starts (slow mode: the handler then hangs)."""
    import asyncpg

    def record(_t: float, _attempt: int) -> None:
        if slow or os.environ.get("BENCH_TRACE"):
            print("started", flush=True)

    preload(impl)  # imports are not processing: every impl loads its modules before "ready"
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if impl == "safeship":
        from safeship.jobs import Worker

        await Worker(safeship_jobs(record, slow), dsn, cron=False).run()
    elif impl == "pgqueuer":
        conn = await asyncpg.connect(dsn)
        await pgqueuer_app(conn, record, slow).run()
    else:
        app = procrastinate_app(dsn, record, slow)
        async with app.open_async():
            await app.run_worker_async(install_signal_handlers=False)


def preload(impl: str) -> None:
    """Import ``impl``'s worker modules (over a second on a loaded machine), so a process
    case times draining the queue, not the interpreter loading libraries."""
    import importlib

    names = {
        "safeship": ("safeship.jobs", "safeship.jobs._store_pg", "asyncpg", "psycopg"),
        "pgqueuer": ("pgqueuer", "asyncpg"),
        "procrastinate": ("procrastinate", "psycopg"),
    }[impl]
    for name in names:
        importlib.import_module(name)


async def spawn(impl: str, dsn: str, slow: bool = False) -> asyncio.subprocess.Process:
    env = {**os.environ, "BENCH_TRACE": "1" if slow else ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        impl,
        dsn,
        "1" if slow else "0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"{impl} worker did not start")
    return proc


def go(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def count(dsn: str, impl: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(PENDING[impl]))
    finally:
        await conn.close()


async def bench_process(impl: str, dsn: str, jobs: int, procs: int) -> None:
    import asyncpg

    _, bulk, close = await enqueuer(impl, dsn)
    for start in range(0, jobs, 1000):
        await bulk(min(1000, jobs - start))
    await close()
    workers = [await spawn(impl, dsn) for _ in range(procs)]
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        for proc in workers:
            go(proc)
        while await conn.fetchval(PENDING[impl]) > 0:  # noqa: ASYNC110 - polling the database is the measurement
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
        for proc in workers:
            await kill(proc)
    emit(f"process-{procs}proc", impl, round(jobs / elapsed, 1), "jobs/s")


# -- latency ---------------------------------------------------------------------------


async def bench_latency(impl: str, dsn: str, jobs: int) -> None:
    import asyncpg

    seen: list[float] = []

    def record(t: float, _attempt: int) -> None:
        if t:
            seen.append((time.time() - t) * 1000)

    conn = await asyncpg.connect(dsn)
    if impl == "safeship":
        from safeship.jobs import Worker

        worker = Worker(safeship_jobs(record), dsn, cron=False)
        runner = asyncio.create_task(worker.run())
        stop: Any = worker.stop
    elif impl == "pgqueuer":
        pgq = pgqueuer_app(conn, record)
        runner = asyncio.create_task(pgq.run())
        stop = lambda: pgq.shutdown.set()  # noqa: E731
    else:
        app = procrastinate_app(dsn, record)
        await app.open_async()
        runner = asyncio.create_task(app.run_worker_async(install_signal_handlers=False))
        stop = runner.cancel
    one, _, close = await enqueuer(impl, dsn)
    await asyncio.sleep(0.5)  # the worker is listening
    for i in range(jobs):
        await one(i, time.time())
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 10
    while len(seen) < jobs and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded wait for the handler to run
        await asyncio.sleep(0.01)
    stop()
    await asyncio.wait([runner], timeout=10)
    runner.cancel()
    await close()
    await conn.close()
    if impl == "procrastinate":
        await app.close_async()
    ordered = sorted(seen)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    emit("latency-p50", impl, round(statistics.median(ordered), 2), "ms")
    emit("latency-p99", impl, round(p99, 2), "ms")


# -- orphan rescue ---------------------------------------------------------------------


async def bench_orphan(impl: str, dsn: str, wait: float) -> None:
    one, _, close = await enqueuer(impl, dsn)
    await one(0)
    await close()
    first = await spawn(impl, dsn, slow=True)
    go(first)
    assert first.stdout is not None
    await asyncio.wait_for(first.stdout.readline(), 60)  # "started": the job is mid-run
    await kill(first)
    killed = time.perf_counter()
    second = await spawn(impl, dsn, slow=True)
    go(second)
    assert second.stdout is not None
    try:
        await asyncio.wait_for(
            second.stdout.readline(), max(0.1, wait - (time.perf_counter() - killed))
        )
        emit("orphan-rescue", impl, round(time.perf_counter() - killed, 2), "s")
    except TimeoutError:
        note(f"orphan-rescue: {impl} did not run the job again within {wait:.0f} s")
        emit("orphan-rescue", impl, None, "s")
    finally:
        await kill(second)


# -- main ------------------------------------------------------------------------------


CLEAN = {"safeship": "safeship_jobs", "pgqueuer": "pgqueuer", "procrastinate": "procrastinate_"}


async def clean(impl: str, dsn: str) -> None:
    """Empty ``impl``'s queue tables, so the next case starts from nothing."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE $1",
            CLEAN[impl] + "%",
        )
        tables = ", ".join(f'"{r[0]}"' for r in names)
        await conn.execute(f"TRUNCATE {tables} CASCADE")
    finally:
        await conn.close()


def sizes_for(impl: str, quick: bool) -> dict[str, Any]:
    slow_peer = impl == "procrastinate"
    return {
        "single": 200 if quick else 3000,
        "batches": 6 if quick else 30,
        "process": (100 if slow_peer else 2000) if quick else (2000 if slow_peer else 30000),
        "latency": 10 if quick else 100,
        "orphan_wait": 6.5 if quick else 40.0,
    }


async def run_all(impls: list[str], quick: bool, only: str | None = None) -> None:
    """Case by case, each impl in turn (so a slow spell of the machine hits all of them);
    ``only="enqueue"`` runs the two enqueue cases alone."""
    databases: dict[str, str] = {}
    try:
        for impl in impls:
            try:
                databases[impl] = await fresh_database(impl)
            except ImportError as error:
                note(f"{impl}: skipped, not installed ({error}); pip install -e '.[bench]'")
        first = sizes_for("safeship", quick)
        await bench_enqueue(databases, first["single"], first["batches"])
        if only == "enqueue":
            return
        for impl, dsn in databases.items():
            await clean(impl, dsn)
        cases: list[tuple[str, Any]] = [
            ("process-1", lambda i, d, z: bench_process(i, d, z["process"], 1)),
            ("process-2", lambda i, d, z: bench_process(i, d, z["process"], 2)),
            ("latency", lambda i, d, z: bench_latency(i, d, z["latency"])),
            ("orphan", lambda i, d, z: bench_orphan(i, d, z["orphan_wait"])),
        ]
        for _, case in cases:
            for impl, dsn in databases.items():
                await case(impl, dsn, sizes_for(impl, quick))
                await clean(impl, dsn)
    finally:
        for dsn in databases.values():
            await drop_database(dsn)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(child(sys.argv[2], sys.argv[3], sys.argv[4] == "1"))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 60 s")
    parser.add_argument("--impl", default=",".join(IMPLS))
    parser.add_argument("--case", choices=["enqueue"], help="run only these cases")
    options = parser.parse_args()
    impls = options.impl.split(",")
    for impl in impls:
        if impl not in IMPLS:
            parser.error(f"unknown impl {impl!r}")
    asyncio.run(run_all(impls, options.quick, options.case))


if __name__ == "__main__":
    main()
