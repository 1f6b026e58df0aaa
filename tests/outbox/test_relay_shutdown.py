"""A relay pointed at a broker that refuses or never answers stays bounded: each connect
has a deadline, SIGTERM stops it promptly with exit code 0, and the outage is one
throttled log line with the pending count, not a traceback per try."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from safeship.outbox import NewEvent, Relay, RelayConfig, stage_many
from safeship.outbox._outage import OutageLog
from safeship.outbox.sinks.nats import NatsSink

from .conftest import free_port, wait_until
from .faults import BlackHole

URLS = {
    "nats": "nats://127.0.0.1:{port}",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:{port}/",
    "redis": "redis://127.0.0.1:{port}/0",
}


def _stage(engine: sa.Engine, count: int) -> None:
    with engine.begin() as conn:
        stage_many(
            conn,
            [
                NewEvent(aggregate_type="order", aggregate_id=f"k{i}", type="created", payload=i)
                for i in range(count)
            ],
        )


class RelayProcess:
    """``safeship outbox relay`` in a subprocess, its stderr read line by line."""

    def __init__(self, broker: str, url: str, database: str) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "safeship.cli_entry", "outbox", "relay"),
                *("--broker", broker, "--url", url, "--database-url", database),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        assert "relaying to" in self.proc.stdout.readline()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def outage_lines(self) -> list[str]:
        return [line for line in self.errors if "outbox.relay.sink_unavailable" in line]

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and stdout (killed if it does not exit)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        self._reader.join(10)
        return self.proc.returncode, out


@pytest.mark.parametrize("broker", sorted(URLS))
@pytest.mark.parametrize("answer", ["never-answers", "refuses"])
def test_relay_process_stops_promptly_on_sigterm_while_the_broker_is_unreachable(
    broker: str, answer: str, sqlite_engine: sa.Engine, black_hole: BlackHole
) -> None:
    _stage(sqlite_engine, 3)
    port = black_hole.port if answer == "never-answers" else free_port()
    database = sqlite_engine.url.render_as_string(hide_password=False)
    relay = RelayProcess(broker, URLS[broker].format(port=port), database)
    if answer == "never-answers":  # SIGTERM while it waits for the broker's first byte
        wait_until(lambda: black_hole.accepted, timeout=30, message="relay connecting")
    else:  # SIGTERM while it retries, after it reported the outage
        wait_until(relay.outage_lines, timeout=30, message="outage reported")
    code, out = relay.stop()
    errors = "".join(relay.errors)
    assert code == 0, errors
    assert "stopped after 0 events" in out
    assert "Traceback" not in errors, errors
    if answer == "refuses":
        (line,) = relay.outage_lines()
        assert "pending" in line and "sink" in line, line


async def test_an_outage_logs_one_line_with_the_pending_count_and_no_traceback(
    sqlite_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _stage(sqlite_engine, 3)
    sink = NatsSink(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.3)
    config = RelayConfig(poll_interval=0.05, connect_timeout=5.0, outage_log_interval=3600)
    relay = Relay(sqlite_engine, sink, config=config)
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(600):
            if relay.sink_failures >= 4:
                break
            await asyncio.sleep(0.05)
    finally:
        relay.stop()
        await task
    assert relay.sink_failures >= 4
    lines = [r for r in caplog.records if r.getMessage() == "outbox.relay.sink_unavailable"]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    line = lines[0]
    assert (line.sink, line.phase, line.pending) == ("NatsSink", "open", 3)  # type: ignore[attr-defined]
    assert "NATS" in line.error  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r is not line]


def test_outage_log_throttles_and_reports_recovery(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = OutageLog(
        logging.getLogger("test.outage"),
        event="x.down",
        recovered_event="x.up",
        interval=10.0,
        clock=lambda: now[0],
    )
    caplog.set_level(logging.INFO, "test.outage")
    for second in range(25):  # one failure a second for 25 s
        now[0] = float(second)
        outage.failed(ConnectionError(f"refused\nsecond line {second}"), sink="s")
    outage.recovered(sink="s")
    outage.recovered(sink="s")  # no outage: no line
    records = [(r.getMessage(), getattr(r, "failures", None)) for r in caplog.records]
    assert records == [("x.down", 1), ("x.down", 10), ("x.down", 10), ("x.up", 25)]
    assert caplog.records[0].error == "ConnectionError: refused"  # type: ignore[attr-defined]
    assert caplog.records[-1].outage_seconds == 24.0  # type: ignore[attr-defined]
