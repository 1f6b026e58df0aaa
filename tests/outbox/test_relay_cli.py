"""``safeship outbox relay``: the broker from SAFESHIP_BROKER_URL's scheme, /metrics and
/health on --metrics-port, the JetStream stream it needs, its backlog as log lines; and
the NATS sink's default subject that does not repeat the event type."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from safeship.outbox import NewEvent, Relay, RelayConfig, stage_many
from safeship.outbox._model import Event
from safeship.outbox.sinks.nats import DefaultSubject, NatsSink

from .conftest import read_stream, wait_until


def _event(aggregate_type: str, type_: str) -> Event:
    return Event(
        seq=1,
        id=uuid.uuid4(),
        aggregate_type=aggregate_type,
        aggregate_id="7",
        type=type_,
        payload=b"{}",
        headers={},
        created_at=datetime.now(UTC),
    )


def test_the_default_subject_does_not_repeat_the_aggregate() -> None:
    subject = DefaultSubject()
    assert subject(_event("order", "order.created")) == "events.order.created"
    assert subject(_event("order", "created")) == "events.order.created"
    assert subject(_event("order", "orderly")) == "events.order.orderly"
    assert DefaultSubject("t1.")(_event("order", "order.paid")) == "t1.order.paid"


def test_stream_setup_needs_a_fixed_subject_prefix_and_a_valid_name() -> None:
    with pytest.raises(ValueError, match="fixed prefix"):
        NatsSink("nats://x", subject="{aggregate_type}.{type}", stream_setup="create")
    with pytest.raises(ValueError, match="stream must be"):
        NatsSink("nats://x", stream="bad name", stream_setup="create")
    with pytest.raises(ValueError, match="stream_setup must be"):
        NatsSink("nats://x", stream_setup="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("carrier://x", "the URL's scheme names it"),
        ("no-scheme", "the URL's scheme names it"),
    ],
)
def test_the_relay_refuses_a_broker_url_it_cannot_name(
    sqlite_engine: sa.Engine, url: str, message: str
) -> None:
    from safeship.cli.outbox import outbox_app

    database = sqlite_engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        outbox_app, ["relay", "--url", url], env={"SAFESHIP_DATABASE_URL": database}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_relay_needs_a_broker(sqlite_engine: sa.Engine) -> None:
    from safeship.cli.outbox import outbox_app

    database = sqlite_engine.url.render_as_string(hide_password=False)
    env = {"SAFESHIP_DATABASE_URL": database, "SAFESHIP_BROKER_URL": ""}
    result = CliRunner().invoke(outbox_app, ["relay"], env=env)
    assert result.exit_code == 2 and "SAFESHIP_BROKER_URL" in result.output


def test_the_scheme_names_the_broker() -> None:
    from safeship.cli.outbox import broker_of, masked_url

    named = {
        u: broker_of(u, None)
        for u in (
            "nats://h:4222",
            "tls://h:4222",
            "amqp://u:p@h/",
            "amqps://h/",
            "redis://h",
            "rediss://h",
            "kafka://h:9092",
            "http://h/x",
            "https://h/x",
        )
    }
    assert set(named.values()) == {"nats", "rabbitmq", "redis", "kafka", "webhook"}
    assert named["amqp://u:p@h/"] == "rabbitmq" and named["https://h/x"] == "webhook"
    assert broker_of("nats://h", "rabbitmq") == "rabbitmq"  # --broker wins
    assert masked_url("amqp://app:s3cret@h:5672/") == "amqp://app:***@h:5672/"


async def test_a_sink_creates_its_stream_and_publishes_on_the_short_subject(
    nats_url: str, sqlite_engine: sa.Engine
) -> None:
    import nats

    prefix = "t" + uuid.uuid4().hex[:10]
    name = "S" + uuid.uuid4().hex[:10].upper()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        checking = NatsSink(nats_url, subject=DefaultSubject(prefix + "."), stream_setup="check")
        with pytest.raises(ConnectionError, match="no JetStream stream captures"):
            await checking.open()
        await checking.close()
        sink = NatsSink(
            nats_url, subject=DefaultSubject(prefix + "."), stream=name, stream_setup="create"
        )
        with sqlite_engine.begin() as conn:
            stage_many(
                conn,
                [
                    NewEvent(
                        aggregate_type="order", aggregate_id="1", type="order.created", payload={}
                    ),
                    NewEvent(aggregate_type="order", aggregate_id="1", type="paid", payload={}),
                ],
            )
        relay = Relay(sqlite_engine, sink, config=RelayConfig(poll_interval=0.05))
        task = asyncio.create_task(relay.run())
        for _ in range(200):
            if relay.published == 2:
                break
            await asyncio.sleep(0.05)
        relay.stop()
        await task
        assert sink.stream_name == name
        subjects = [m.subject for m in await read_stream(js, name)]
        assert subjects == [f"{prefix}.order.created", f"{prefix}.order.paid"]
        again = NatsSink(nats_url, subject=DefaultSubject(prefix + "."), stream_setup="check")
        await again.open()  # now found
        assert again.stream_name == name
        await again.close()
        wrong = NatsSink(
            nats_url, subject=DefaultSubject(prefix + "."), stream="OTHER", stream_setup="create"
        )
        with pytest.raises(ConnectionError, match=f"{name}' captures"):
            await wrong.open()
        await wrong.close()
    finally:
        with_stream = await js.streams_info()
        if any(s.config.name == name for s in with_stream):
            await js.delete_stream(name)
        await nc.close()


class RelayProcess:
    """``safeship outbox relay`` in a subprocess; stdout and stderr collected by threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safeship.cli_entry", "outbox", "relay", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(10)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http only
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_relay_command_takes_the_broker_url_serves_metrics_and_logs_its_backlog(
    nats_url: str, sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    prefix = "t" + uuid.uuid4().hex[:10]
    name = "S" + uuid.uuid4().hex[:10].upper()
    database = sqlite_engine.url.render_as_string(hide_password=False)
    with sqlite_engine.begin() as conn:
        stage_many(
            conn,
            [
                NewEvent(
                    aggregate_type="order", aggregate_id=str(i), type="order.created", payload=i
                )
                for i in range(5)
            ],
        )
    relay = RelayProcess(
        [
            *("--route", prefix + ".{type}", "--stream", name),
            *("--metrics-port", "0", "--backlog-every", "1"),
        ],
        {
            "SAFESHIP_BROKER_URL": nats_url,
            "SAFESHIP_DATABASE_URL": database,
            "SAFESHIP_LOG_FORMAT": "json",
        },
    )
    try:
        wait_until(
            lambda: any("relaying to nats" in line for line in relay.out),
            timeout=20,
            message=f"relay start: {relay.out} {relay.err}",
        )
        shown = next(line for line in relay.out if "/metrics" in line)
        port = re.search(r":(\d+)/metrics", shown)
        assert port is not None, shown
        base = f"http://127.0.0.1:{port.group(1)}"

        def drained() -> bool:
            with sqlite_engine.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM safeship_outbox")).scalar_one()
            return bool(left == 0)

        wait_until(drained, timeout=20, message=f"relay published: {relay.err}")
        status, text = _get(base + "/metrics")
        assert status == 200
        assert "safeship_outbox_backlog 0.0" in text  # read from the database at scrape
        assert "safeship_outbox_published_total 5.0" in text  # the relay's own counter
        wait_until(lambda: _get(base + "/health")[0] == 200, timeout=10, message="health passes")
        health = json.loads(_get(base + "/health")[1])
        assert health["status"] in ("pass", "warn")

        def backlog_lines() -> list[dict[str, Any]]:
            lines = [json.loads(x) for x in relay.err if x.startswith("{")]
            return [x for x in lines if x.get("event") == "outbox.relay.backlog"]

        wait_until(
            lambda: any(x["pending"] == 0 for x in backlog_lines()),
            timeout=10,
            message=f"a backlog line after draining: {relay.err}",
        )
        line = backlog_lines()[-1]
        assert line["published"] == 5 and line["sink"] == "NatsSink" and line["sink_open"]
    finally:
        code = relay.stop()
    assert code == 0, relay.err

    async def read() -> list[str]:
        import nats

        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            info = await js.stream_info(name)
            assert info.config.subjects == [prefix + ".>"]
            return [m.subject for m in await read_stream(js, name)]
        finally:
            await js.delete_stream(name)
            await nc.close()

    assert asyncio.run(read()) == [f"{prefix}.order.created"] * 5
