"""Flag server throughput: the control plane answering Unleash SDKs and OFREP providers.

    python benchmarks/flag_server.py [--quick] [--rounds N] [--duration SECONDS]
    python benchmarks/flag_server.py --cpu [--requests N]

One ``safeship serve`` process (uvicorn, one worker, SQLite with 50 flags) is loaded with
``wrk -t1 -c32`` per case, the cases rotating each round:

- ``client-features-200``: ``GET /api/client/features`` (the whole flag set, ~20 KB);
- ``client-features-304``: the same with the ``If-None-Match`` an SDK sends between changes;
- ``ofrep-evaluate``: ``POST /ofrep/v1/evaluate/flags/{key}`` for one context;
- ``health`` (impl ``baseline``): ``GET /health``, the same server's cheapest route (no key,
  no flag work), so ``*-ratio`` lines say what the flag work costs on this machine now.

``--cpu`` drives the same app in this process over ASGI (no server, no load generator) and
prints the process CPU time per request of each case (``cpu-us``, medians of 3 rounds of
``--requests``, the cases alternating), with ``health``'s divided by each case's: a figure
that a loaded machine disturbs far less than req/s.

Each answer is served from the snapshot in memory (no database read per request). On two
CPUs or more the server runs on CPU 1 and wrk on CPU 0 (``taskset``). Prints JSON lines
``{"bench", "case", "impl", "value", "unit"}``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BENCH = "flag_server"
KEY = "ss_bench_reader_Qm8Wr2Lx7Nv4Pk9Bc3Hd6Jf1Gs0Ey"
SECRET = "Hq3xN8vR2mT7kL4pW9cB6dF1gJ5sZ0aYeU_iO-rQ"
CONNECTIONS = 32
FLAGS = 50


def pinned(cpu: int) -> tuple[str, ...]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ("taskset", "-c", str(cpu))
    return ()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seed(database_url: str) -> None:
    """50 flags: rollouts, targeting, constraints and variants, as a real service has."""
    from safeship.db._engine import create_engine
    from safeship.flags.store import FlagStore

    engine = create_engine(database_url)
    store = FlagStore(engine)
    for number in range(FLAGS):
        name = f"flag-{number:02d}"
        constraints = [{"contextName": "plan", "operator": "IN", "values": ["gold", "silver"]}]
        strategy = {
            "name": "flexibleRollout",
            "parameters": {"rollout": str(number * 2), "stickiness": "default", "groupId": name},
            "constraints": constraints if number % 3 == 0 else [],
        }
        variants = [
            {"name": c, "weight": 500, "weightType": "variable", "stickiness": "default",
             "payload": {"type": "string", "value": c}}
            for c in ("blue", "green")
        ] if number % 2 else []  # fmt: skip
        definition = {"name": name, "enabled": True, "strategies": [strategy], "variants": variants}
        store.create(name, actor="bench", definition=definition)
    engine.dispose()


@contextlib.contextmanager
def control_plane(workdir: Path) -> Iterator[str]:
    database_url = f"sqlite:///{workdir / 'flags.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESHIP_")}
    env.update(
        {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": f"bench:read:{KEY}",
            "SAFESHIP_SESSION_SECRET": SECRET,
        }
    )
    cli = [sys.executable, "-m", "safeship.cli_entry"]
    subprocess.run([*cli, "db", "upgrade", "--create"], env=env, check=True, capture_output=True)
    seed(database_url)
    port = free_port()
    command = [*pinned(1), *cli, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("safeship serve did not start")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(20)


def cases(url: str, workdir: Path) -> dict[str, tuple[str, list[str]]]:
    """Case name -> (impl, wrk arguments); checks each request answers as expected first."""
    auth = {"Authorization": KEY}
    first = httpx.get(url + "/api/client/features", headers=auth)
    assert first.status_code == 200 and len(first.json()["features"]) == FLAGS, first.text[:200]
    etag = first.headers["etag"]
    again = httpx.get(url + "/api/client/features", headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304
    body = json.dumps({"context": {"targetingKey": "user-7", "plan": "gold"}})
    one = httpx.post(url + "/ofrep/v1/evaluate/flags/flag-33", headers=auth, content=body)
    assert one.status_code == 200, one.text
    script = workdir / "ofrep.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "{KEY}"\n'
    )
    key = ["-H", f"Authorization: {KEY}"]
    return {
        "client-features-200": ("safeship", [*key, url + "/api/client/features"]),
        "client-features-304": (
            "safeship",
            [*key, "-H", f"If-None-Match: {etag}", url + "/api/client/features"],
        ),
        "ofrep-evaluate": (
            "safeship",
            ["-s", str(script), url + "/ofrep/v1/evaluate/flags/flag-33"],
        ),
        "health": ("baseline", [url + "/health"]),
    }


def wrk(arguments: list[str], seconds: int) -> float:
    command = [
        *pinned(0),
        *("wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", *arguments),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    out = done.stdout
    if done.returncode != 0 or "Non-2xx or 3xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}{done.stderr}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's report:\n{out}")
    return float(found.group(1))


def cpu_per_request(requests: int) -> dict[str, float]:
    """Median process CPU microseconds per request of each case, the app driven in process."""
    import asyncio
    import logging

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'flags.db'}"
        environ = {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": f"bench:read:{KEY}",
            "SAFESHIP_SESSION_SECRET": SECRET,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESHIP_")} | environ
        cli = [sys.executable, "-m", "safeship.cli_entry", "db", "upgrade", "--create"]
        subprocess.run(cli, env=env, check=True, capture_output=True)
        seed(database_url)
        logging.disable(logging.CRITICAL)
        from safeship.server import create_app
        from safeship.settings import load_settings

        app = create_app(load_settings(environ))
        return asyncio.run(_drive(app, requests))


async def _drive(app: object, requests: int) -> dict[str, float]:
    import asyncio

    async def call(path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST" if body else "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        received = False
        status = 0

        async def receive() -> dict[str, object]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])  # type: ignore[call-overload]

        await app(scope, receive, send)  # type: ignore[operator]
        return status

    lifespan = app.router.lifespan_context(app)  # type: ignore[attr-defined]
    async with lifespan:
        key = [(b"authorization", KEY.encode())]
        assert await call("/api/client/features", key) == 200
        state = app.state.flag_feed.snapshot()  # type: ignore[attr-defined]
        from safeship.server.flag_feed import FeatureQuery

        etag = state.features_body(FeatureQuery((), None)).etag.encode()
        body = json.dumps({"context": {"targetingKey": "user-7", "plan": "gold"}}).encode()
        plan: dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]] = {
            "client-features-200": ("/api/client/features", key, b""),
            "client-features-304": ("/api/client/features", [*key, (b"if-none-match", etag)], b""),
            "ofrep-evaluate": (
                "/ofrep/v1/evaluate/flags/flag-33",
                [*key, (b"content-type", b"application/json")],
                body,
            ),
            "health": ("/health", [], b""),
        }
        for name, (path, headers, content) in plan.items():
            assert await call(path, headers, content) in (200, 304), name
        spent: dict[str, list[float]] = {name: [] for name in plan}
        for _ in range(3):
            for name, (path, headers, content) in plan.items():
                start = time.process_time()
                for _ in range(requests):
                    await call(path, headers, content)
                spent[name].append((time.process_time() - start) / requests * 1e6)
    return {name: statistics.median(values) for name, values in spent.items()}


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": BENCH, "case": case, "impl": impl, "value": value, "unit": unit}
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (whole run < 60 s)")
    parser.add_argument("--rounds", type=int, help="wrk runs per case")
    parser.add_argument("--duration", type=int, help="whole seconds per wrk run")
    parser.add_argument("--cpu", action="store_true", help="CPU per request, in process")
    parser.add_argument("--requests", type=int, default=400, help="requests per --cpu round")
    args = parser.parse_args()
    if args.cpu:
        spent = cpu_per_request(args.requests)
        for name, micros in spent.items():
            impl = "baseline" if name == "health" else "safeship"
            emit(f"{name}-cpu", impl, round(micros, 1), "us")
            if impl != "baseline":
                emit(f"{name}-cpu-ratio", impl, round(spent["health"] / micros, 3), "ratio")
        return
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/flag_server.py needs wrk: run scripts/ensure-system-deps")
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.duration or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp, control_plane(Path(tmp)) as url:
        plan = cases(url, Path(tmp))
        for _, arguments in plan.values():
            wrk(arguments, 1)  # warm-up
        results: dict[str, list[float]] = {name: [] for name in plan}
        names = list(plan)
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                results[name].append(wrk(plan[name][1], seconds))
            summary = ", ".join(f"{n} {results[n][-1]:.0f}" for n in names)
            print(f"round {number + 1}/{rounds}: {summary} req/s", file=sys.stderr)
    baseline = statistics.median(results["health"])
    for name, (impl, _) in plan.items():
        value = statistics.median(results[name])
        emit(name, impl, round(value, 1), "req/s")
        if impl != "baseline":
            emit(f"{name}-ratio", impl, round(value / baseline, 3), "ratio")


if __name__ == "__main__":
    main()
