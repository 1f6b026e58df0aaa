"""How fast a flag change made through the control plane's API reaches evaluation in
several separate processes (PostgreSQL LISTEN/NOTIFY push, polling as fallback).

Each worker process runs a ``FlagClient`` and reports the monotonic time at which each
new snapshot was installed; the parent changes the flag over HTTP and records when it
sent the request.  CLOCK_MONOTONIC is shared by every process on the machine.

    python benchmarks/flags_propagation.py [--quick] [--processes 4] [--changes 100]

Prints JSON lines: cases ``propagation-p50`` / ``propagation-p99`` / ``propagation-max``
(unit ``ms``, over every process and change) for impl ``safeship``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import sqlalchemy as sa
import uvicorn

ADMIN_KEY = "ss_bench_" + uuid.uuid4().hex + uuid.uuid4().hex
WORKER = r"""
import sys, time, json
from safeship.db import create_engine
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
client = FlagClient(store=FlagStore(create_engine(sys.argv[1])), poll_interval=5.0)
client.start()
client.add_listener(lambda v: print(json.dumps([v, time.monotonic_ns()]), flush=True))
while not client.listening.is_set():
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.read()
client.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_database() -> tuple[str, str]:
    admin = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"safeship_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    admin = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def start_plane(url: str) -> tuple[uvicorn.Server, str]:
    from safeship.server import create_app
    from safeship.settings import load_settings

    settings = load_settings(
        {
            "SAFESHIP_DATABASE_URL": url,
            "SAFESHIP_ADMIN_KEYS": f"bench:admin:{ADMIN_KEY}",
            "SAFESHIP_SESSION_SECRET": uuid.uuid4().hex * 2,
        }
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--changes", type=int, default=None)
    args = parser.parse_args()
    changes = args.changes or (20 if args.quick else 200)
    name, url = make_database()
    workers: list[subprocess.Popen[str]] = []
    try:
        server, base = start_plane(url)
        headers = {"X-API-Key": ADMIN_KEY}
        http = httpx.Client(base_url=base, headers=headers, timeout=10)
        http.post("/api/v1/flags", json={"name": "bench-flag"}).raise_for_status()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for _ in range(args.processes):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, url],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        seen: list[dict[int, int]] = [{} for _ in workers]
        for i, worker in enumerate(workers):
            assert worker.stdout is not None
            while (line := worker.stdout.readline().strip()) != "ready":
                if not line:
                    raise RuntimeError("a worker died before it was ready")
            threading.Thread(target=_collect, args=(worker, seen[i]), daemon=True).start()
        sent: dict[int, int] = {}
        for i in range(changes):
            path = "/api/v1/flags/bench-flag/" + ("enable" if i % 2 == 0 else "disable")
            started = time.monotonic_ns()
            version = http.post(path, json={}).raise_for_status().json()["version"]
            sent[version] = started
            deadline = time.monotonic() + 10
            while any(version not in s for s in seen) and time.monotonic() < deadline:
                time.sleep(0.001)
        delays = [(s[v] - t) / 1e6 for v, t in sent.items() for s in seen if v in s]
        missing = len(sent) * len(seen) - len(delays)
        for case, value in (
            ("propagation-p50", percentile(delays, 0.50)),
            ("propagation-p99", percentile(delays, 0.99)),
            ("propagation-max", max(delays)),
        ):
            print(
                json.dumps(
                    {
                        "bench": "flags",
                        "case": case,
                        "impl": "safeship",
                        "value": round(value, 2),
                        "unit": "ms",
                        "processes": args.processes,
                        "changes": changes,
                    }
                )
            )
        print(
            json.dumps(
                {
                    "bench": "flags",
                    "case": "propagation-missed",
                    "impl": "safeship",
                    "value": missing,
                    "unit": "count",
                }
            )
        )
        server.should_exit = True
    finally:
        for worker in workers:
            if worker.stdin:
                worker.stdin.close()
            worker.wait(10)
        drop_database(name)


def _collect(worker: subprocess.Popen[str], into: dict[int, int]) -> None:
    assert worker.stdout is not None
    for line in worker.stdout:
        version, at = json.loads(line)
        into[version] = at


if __name__ == "__main__":
    main()
