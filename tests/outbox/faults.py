"""Helpers for the relay fault tests: a background stager and a stream checker."""

from __future__ import annotations

import json
import random
import socket
import threading
import uuid
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from safeship.outbox import NewEvent, stage, stage_many
from safeship.outbox._model import partition_of


class Stager(threading.Thread):
    """Stage ``total`` events over ``keys`` keys in small random transactions."""

    def __init__(self, engine: sa.Engine, total: int, keys: int, *, pace: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.engine, self.total, self.keys, self.pace = engine, total, keys, pace
        self.counters: dict[str, int] = defaultdict(int)
        self.staged = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        try:
            while self.staged < self.total:
                size = min(rng.randint(1, 40), self.total - self.staged)
                with self.engine.begin() as conn:
                    stage_many(conn, [self._next(rng) for _ in range(size)])
                self.staged += size
                if self.pace and self._stop.wait(self.pace):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _next(self, rng: random.Random) -> NewEvent:
        key = f"k{rng.randrange(self.keys)}"
        n = self.counters[key]
        self.counters[key] += 1
        return NewEvent(
            aggregate_type="order", aggregate_id=key, type="changed", payload={"k": key, "n": n}
        )


class BlackHole:
    """A TCP port that accepts connections and never sends a byte: a broker that hangs."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self._listener.close()
        for client in self.accepted:
            client.close()


def stage_poison(engine: sa.Engine) -> set[uuid.UUID]:
    """Stage a 5 MB event (over NATS's max_payload; staged with the cap raised) and write a
    row NATS cannot encode (a header name with a space) straight into the table."""
    key_big, key_bad = "k7", "k8"
    with engine.begin() as conn:
        big = stage(
            conn,
            aggregate_type="order",
            aggregate_id=key_big,
            type="changed",
            payload={"k": key_big, "blob": "x" * 5_000_000},
            max_event_bytes=6_000_000,
        )
        bad = uuid.uuid4()
        conn.execute(
            sa.text(
                "INSERT INTO safeship_outbox (id, aggregatetype, aggregateid, type, payload, "
                "headers, partition, created_at) VALUES (:id, 'order', :k, 'changed', "
                "CAST('{}' AS jsonb), CAST(:h AS jsonb), :p, now())"
            ),
            {"id": bad, "k": key_bad, "h": '{"bad header": "x"}', "p": partition_of(key_bad)},
        )
    return {big, bad}


def pending(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_outbox")).scalar_one())


async def check_stream(js: Any, name: str, stager: Stager) -> None:
    """Every staged event is in the stream exactly once and in order per key."""
    info = await js.stream_info(name)
    seen_ids: set[str] = set()
    by_key: dict[str, list[int]] = defaultdict(list)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(name, seq)
        msg_id = msg.headers["Nats-Msg-Id"]
        assert msg_id not in seen_ids, f"duplicate {msg_id} in the stream"
        seen_ids.add(msg_id)
        uuid.UUID(msg_id)
        body = json.loads(msg.data)
        by_key[body["k"]].append(body["n"])
    assert len(seen_ids) == stager.total, f"{len(seen_ids)} of {stager.total} in the stream"
    for key, numbers in by_key.items():
        assert numbers == list(range(stager.counters[key])), f"order broken for {key}"
