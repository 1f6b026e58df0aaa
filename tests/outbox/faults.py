"""Helpers for the relay fault tests: a background stager and a stream checker."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from safeship.outbox import NewEvent, stage_many


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
