"""Fixtures for the outbox tests: migrated databases, JetStream streams, a private NATS."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, upgrade

from .faults import BlackHole

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def wait_until(condition: Any, *, timeout: float, message: str, interval: float = 0.02) -> None:
    """Poll ``condition()`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/outbox.db")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh PostgreSQL database migrated to the newest schema."""
    engine = create_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    return postgres_url


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateNats:
    """A throw-away nats-server with JetStream on its own port and store dir."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._up, timeout=10, message="private nats-server did not start")

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    if not os.path.exists(NATS_SERVER):
        pytest.skip("nats-server binary not installed")
    server = PrivateNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[tuple[str, Any]]:
    """A JetStream stream capturing ``<name>.>`` on the shared server; deleted afterwards."""
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = "T" + uuid.uuid4().hex[:10].upper()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    yield name, js
    await js.delete_stream(name)
    await nc.close()


async def read_stream(js: Any, name: str) -> list[Any]:
    """Every message of a stream, in stream order."""
    info = await js.stream_info(name)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        messages.append(await js.get_msg(name, seq))
    return messages


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()
