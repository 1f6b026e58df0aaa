"""HTTP middleware overhead: requests/s and p99 latency of a trivial endpoint behind
bare Starlette, the full ``safeship.web._protect`` stack and a peer stack of popular packages.

    python benchmarks/middleware.py [--quick] [--rounds N] [--duration SECONDS]
                                    [--no-instructions]

Implementations, all around the same Starlette app (``GET /api/ping`` → ``pong``):

  baseline     the bare Starlette app
  safeship     ``protect(app, api_keys=[key], health=HealthRegistry())``: request id, JSON
               access log (``configure_logging(fmt="json")`` writing to ``/dev/null``: every
               line is rendered and written, PII masking included), HTTP metrics, health
               probes, body size limit, request timeout and API-key auth on ``/api``
  peer-stack   asgi-correlation-id + prometheus-fastapi-instrumentator (its default
               metrics, installed with ``Instrumentator().instrument(app)``) + a pure-ASGI
               structlog access-log middleware (structlog's fast production set-up: JSON
               lines to ``/dev/null``, filtering bound logger, cached) + a pure-ASGI API-key
               check comparing SHA-256 digests in constant time

Each implementation runs in its own uvicorn server process (one worker, uvicorn's access
log off as with ``--no-access-log``, default loop and HTTP parser, socket bound on
127.0.0.1 with an ephemeral port); every process is started first and warmed up, then
``wrk -t1 -c32 --latency`` (with a valid ``X-API-Key``) loads one server at a time, the
order rotating every round so a noisy machine slows all of them alike. On a machine with
two CPUs or more, the servers run on CPU 1 and wrk on CPU 0 (``taskset``).

Then each server runs again under ``valgrind --tool=callgrind``: after a warm-up, every
CPU instruction the server process executes for a fixed number of sequential requests is
counted. The count is the same on every run, so it compares the stacks' CPU cost exactly
where req/s moves with the machine's load; it leaves out the kernel's share (the write of
a log line) and the cost of cache misses, so the req/s ratio is the one that matters to a
service, and the instruction ratio is the one to track changes with (``--no-instructions``
skips it). The requests are sequential, one per event-loop iteration, so it leaves out
what safeship saves under concurrent load by writing the access-log lines of a loop
iteration together: there, the instruction count is an upper bound.

Each stdout line is one measurement (median over the rounds)::

    {"bench": "middleware", "case": "trivial-endpoint", "impl": "safeship", "value": 4100.0,
     "unit": "req/s"}

Cases: ``trivial-endpoint`` (req/s), ``trivial-endpoint-p99`` (ms),
``trivial-endpoint-ratio`` (req/s of the impl ÷ baseline's in the same round),
``trivial-endpoint-instructions`` (instructions/request) and
``trivial-endpoint-instructions-ratio`` (baseline's instructions ÷ the impl's). A summary
goes to stderr. wrk and valgrind are required (``scripts/ensure-system-deps`` installs
them).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

BENCH = "middleware"
CASE = "trivial-endpoint"
IMPLS = ("baseline", "safeship", "peer-stack")
HOST = "127.0.0.1"  # every load stays on this machine
PATH = "/api/ping"
KEY_ENV = "SAFESHIP_BENCH_API_KEY"
CONNECTIONS = 32


# -- the servers (run in subprocesses: ``--serve IMPL``) --------------------------------


def trivial_app(middleware: list[Any] | None = None) -> Any:
    """The endpoint every implementation serves."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ping(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    return Starlette(routes=[Route(PATH, ping)], middleware=middleware)


def safeship_app(key: str, sink: Any) -> Any:
    from safeship.observe import configure_logging
    from safeship.observe.health import HealthRegistry
    from safeship.web import protect

    configure_logging(fmt="json", stream=sink)
    return protect(trivial_app(), api_keys=[key], health=HealthRegistry())


class PeerApiKey:
    """API-key check on ``/api``: SHA-256 digests compared with ``hmac.compare_digest``."""

    def __init__(self, app: Any, *, key: str) -> None:
        self.app = app
        self.digest = hashlib.sha256(key.encode()).digest()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api"):
            await self.app(scope, receive, send)
            return
        presented = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
        if hmac.compare_digest(hashlib.sha256(presented).digest(), self.digest):
            await self.app(scope, receive, send)
            return
        from starlette.responses import PlainTextResponse

        await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)


class StructlogAccessLog:
    """One structlog event per request with method, path, status and duration."""

    def __init__(self, app: Any) -> None:
        import structlog

        self.app = app
        self.log = structlog.get_logger("access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            self.log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                client=client[0] if client else None,
            )


def peer_app(key: str, sink: Any) -> Any:
    import structlog
    from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
    from prometheus_fastapi_instrumentator import Instrumentator
    from starlette.middleware import Middleware

    def add_request_id(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["request_id"] = correlation_id.get()
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=sink),
        cache_logger_on_first_use=True,
    )
    app = trivial_app(
        [
            Middleware(CorrelationIdMiddleware),
            Middleware(StructlogAccessLog),
            Middleware(PeerApiKey, key=key),
        ]
    )
    Instrumentator().instrument(app)
    return app


def serve(impl: str) -> None:
    """Bind an ephemeral port on 127.0.0.1, print it, and serve ``impl`` with uvicorn."""
    import uvicorn

    key = os.environ[KEY_ENV]
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
    builders = {
        "baseline": lambda: trivial_app(),
        "safeship": lambda: safeship_app(key, sink),
        "peer-stack": lambda: peer_app(key, sink),
    }
    app = builders[impl]()
    # proto=IPPROTO_TCP, as uvicorn's own binding does: asyncio sets TCP_NODELAY only
    # on such sockets, and without it every keep-alive response waits ~40 ms (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, workers=1, access_log=False, log_level="warning", log_config=None)
    uvicorn.Server(config).run(sockets=[sock])


# -- the load generator --------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    impl: str
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p99_ms: float


def pinned(cpu: int) -> tuple[str, ...]:
    """``taskset -c cpu`` when the machine has two CPUs or more: the server and wrk then
    never share a core or migrate, which steadies the figures of a small machine."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return ()
    return ("taskset", "-c", str(cpu))


@contextmanager
def server(impl: str, key: str, prefix: tuple[str, ...] = ()) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [*prefix, sys.executable, __file__, "--serve", impl],
        env={**env, KEY_ENV: key, "PYTHONHASHSEED": "0"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {impl} server did not start (exit {process.poll()})")
        yield Server(impl, process, int(line))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def check_ready(srv: Server, key: str, deadline: float) -> None:
    """Wait until ``srv`` answers, then check the stack does what it claims."""
    import httpx

    while True:
        try:
            ok = httpx.get(srv.url + PATH, headers={"X-API-Key": key}, timeout=1.0)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or srv.process.poll() is not None:
                raise RuntimeError(f"the {srv.impl} server never answered") from None
            time.sleep(0.05)
    if ok.status_code != 200 or ok.text != "pong":
        raise RuntimeError(f"{srv.impl}: GET {PATH} answered {ok.status_code} {ok.text!r}")
    if srv.impl == "baseline":
        return
    if "x-request-id" not in ok.headers:
        raise RuntimeError(f"{srv.impl}: no X-Request-ID in the response")
    if httpx.get(srv.url + PATH, headers={"X-API-Key": "wrong"}).status_code != 401:
        raise RuntimeError(f"{srv.impl}: a wrong API key was not refused")


_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(srv: Server, key: str, seconds: int) -> Load:
    """Load ``srv`` with wrk for ``seconds`` and parse its report."""
    command = [
        *pinned(0), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
        "-H", f"X-API-Key: {key}", srv.url + PATH,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    out = done.stdout
    rps, p99 = _RPS.search(out), _P99.search(out)
    if done.returncode != 0 or rps is None or p99 is None:
        raise RuntimeError(f"wrk failed on {srv.impl}:\n{out}{done.stderr}")
    bad = _NON_2XX.search(out)
    if bad and int(bad.group(1)):
        raise RuntimeError(f"{srv.impl} answered {bad.group(1)} non-2xx responses:\n{out}")
    return Load(float(rps.group(1)), float(p99.group(1)) * _TO_MS[p99.group(2)])


def run_rounds(servers: list[Server], key: str, rounds: int, seconds: int) -> list[dict[str, Load]]:
    """One wrk run per server per round, the order rotating each round."""
    results: list[dict[str, Load]] = []
    for number in range(rounds):
        shift = number % len(servers)
        loads: dict[str, Load] = {}
        for srv in servers[shift:] + servers[:shift]:
            loads[srv.impl] = wrk(srv, key, seconds)
        results.append(loads)
        summary = "  ".join(f"{i} {loads[i].requests_per_second:8.0f}" for i in IMPLS)
        print(f"round {number + 1}/{rounds}: {summary} req/s", file=sys.stderr)
    return results


def sequential_requests(srv: Server, key: str, count: int) -> None:
    """``count`` keep-alive GETs, one at a time, each checked."""
    import http.client

    connection = http.client.HTTPConnection(HOST, srv.port, timeout=120)
    try:
        for _ in range(count):
            connection.request("GET", PATH, headers={"X-API-Key": key})
            response = connection.getresponse()
            if response.read() != b"pong":
                raise RuntimeError(f"{srv.impl} answered {response.status}")
    finally:
        connection.close()


_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


def instructions_per_request(impl: str, key: str, count: int, workdir: str) -> float:
    """CPU instructions the server process runs per request, counted by callgrind.

    The server starts uninstrumented, answers a warm-up, then callgrind counts every
    instruction of the next ``count`` requests (user space: the kernel's share, such as
    the write of a log line, is not counted). The count is the same on every run, so it
    compares stacks exactly where wrk's figures move with the machine's load.
    """
    out = os.path.join(workdir, f"callgrind.{impl}")
    prefix = (
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out}", "--log-file=" + out + ".log",
    )  # fmt: skip
    with server(impl, key, prefix) as srv:
        check_ready(srv, key, time.monotonic() + 120)
        sequential_requests(srv, key, 200)
        pid = str(srv.process.pid)
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", pid], check=True, capture_output=True)
        sequential_requests(srv, key, count)
        subprocess.run([*control, "-d", pid], check=True, capture_output=True)
        dumps = [n for n in os.listdir(workdir) if n.startswith(f"callgrind.{impl}.")]
        counted = [_TOTALS.search(open(os.path.join(workdir, n)).read()) for n in dumps]  # noqa: SIM115
        totals = [int(m.group(1)) for m in counted if m]
        if len(totals) != 1:
            raise RuntimeError(f"callgrind wrote {len(totals)} dumps for {impl}, not one")
        return totals[0] / count


def run_instructions(key: str, count: int) -> dict[str, float]:
    import tempfile

    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for impl in IMPLS:
            counts[impl] = instructions_per_request(impl, key, count, workdir)
            print(f"{impl}: {counts[impl]:,.0f} instructions/request", file=sys.stderr)
    return counts


def emit(case: str, impl: str, value: float, unit: str) -> None:
    line = {"bench": BENCH, "case": case, "impl": impl, "value": value, "unit": unit}
    print(json.dumps(line), flush=True)


def report_instructions(counts: dict[str, float]) -> None:
    for impl in IMPLS:
        emit(f"{CASE}-instructions", impl, round(counts[impl]), "instructions/request")
    for impl in IMPLS[1:]:
        ratio = counts["baseline"] / counts[impl]
        emit(f"{CASE}-instructions-ratio", impl, round(ratio, 3), "ratio")
    print(
        "by instruction count, safeship keeps"
        f" {counts['baseline'] / counts['safeship']:.0%} of bare Starlette's throughput;"
        f" peer-stack keeps {counts['baseline'] / counts['peer-stack']:.0%}",
        file=sys.stderr,
    )


def report(results: list[dict[str, Load]]) -> None:
    for impl in IMPLS:
        rps = statistics.median(r[impl].requests_per_second for r in results)
        emit(CASE, impl, round(rps, 1), "req/s")
    for impl in IMPLS:
        p99 = statistics.median(r[impl].p99_ms for r in results)
        emit(f"{CASE}-p99", impl, round(p99, 3), "ms")
    ratios = {}
    for impl in IMPLS[1:]:
        ratios[impl] = statistics.median(
            r[impl].requests_per_second / r["baseline"].requests_per_second for r in results
        )
        emit(f"{CASE}-ratio", impl, round(ratios[impl], 3), "ratio")
    verdict = "meets" if ratios["safeship"] >= 0.8 else "misses"
    print(
        f"safeship keeps {ratios['safeship']:.0%} of bare Starlette ({verdict} the 80% target);"
        f" peer-stack keeps {ratios['peer-stack']:.0%}",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (whole run < 60 s)")
    parser.add_argument("--rounds", type=int, help="wrk runs per implementation")
    parser.add_argument("--duration", type=int, help="whole seconds per wrk run")
    parser.add_argument(
        "--no-instructions", action="store_true", help="skip the callgrind instruction count"
    )
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("wrk") is None:
        sys.exit(
            "benchmarks/middleware.py needs wrk, the HTTP load generator, and it is not on"
            " PATH: run scripts/ensure-system-deps (or `apt-get install wrk`)."
        )
    rounds = args.rounds or (6 if args.quick else 15)
    seconds = args.duration or (2 if args.quick else 4)
    key = "ss_bench_" + secrets.token_urlsafe(32)
    with ExitStack() as stack:
        servers = [stack.enter_context(server(impl, key, pinned(1))) for impl in IMPLS]
        for srv in servers:
            check_ready(srv, key, time.monotonic() + 30)
            wrk(srv, key, 1)  # warm-up: imports, caches, first label children
        results = run_rounds(servers, key, rounds, seconds)
    report(results)
    if args.no_instructions:
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("the instruction count needs valgrind (scripts/ensure-system-deps installs it)")
    report_instructions(run_instructions(key, 300 if args.quick else 1000))


if __name__ == "__main__":
    main()
