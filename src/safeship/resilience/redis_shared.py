"""Share one breaker's state across processes through Redis, off the hot path.

Every replica of a service keeps deciding from its own in-memory breaker, so a call
never waits for Redis. A background thread per shared breaker exchanges, every
``interval`` seconds (and at once after a local state change):

* **counts** — each process adds its new closed-state calls, failures and slow calls to
  per-second Redis hashes; the fleet-wide totals of the last ``fleet_window`` seconds are
  judged with the breaker's own rate thresholds, so a fleet that sees 1 call per replica
  still opens together (count- and time-window breakers; consecutive-failure breakers
  share open events only);
* **open events** — a process that opens publishes the open period (a key with a TTL);
  the others open for the time that remains;
* **one fleet-wide probe** — when the open period ends, only the process holding the
  probe lease (``SET NX`` with a TTL) turns half-open and runs the trial calls; the others
  stay open until it closes the breaker (announced by bumping an epoch) or reopens it;
* **manual overrides** — force-open, disable, metrics-only and reset made on one process
  (say, from the control plane) are applied by all.

A Redis outage never fails a call: the exchange logs a throttled warning and the breaker
simply decides alone (it may then probe without the lease) until Redis answers again.
Keys live under ``{prefix}{breaker name}:``.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import deque
from types import TracebackType
from typing import Any

from safeship.resilience._breaker import Breaker
from safeship.resilience._breaker_types import State, Transition
from safeship.resilience._log import logger

__all__ = ["SharedBreakerState", "share_breaker"]

_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_REFRESH = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)
_MANUAL = {State.FORCED_OPEN, State.DISABLED, State.METRICS_ONLY}
_PEER = "peer"
_WARN_EVERY = 10.0


class SharedBreakerState:
    """The background exchange for one breaker; start it with :meth:`start` or ``with``."""

    def __init__(
        self,
        breaker: Breaker,
        client: Any,
        *,
        prefix: str = "safeship:breaker:",
        interval: float = 0.5,
        fleet_window: int = 10,
        probe_ttl: float = 30.0,
    ) -> None:
        if not 0.005 <= interval <= 60:
            raise ValueError(f"interval must be 0.005 to 60 seconds, got {interval!r}")
        if isinstance(fleet_window, bool) or not 1 <= fleet_window <= 3600:
            raise ValueError(f"fleet_window must be 1 to 3600 whole seconds, got {fleet_window!r}")
        self.breaker = breaker
        self.client = client
        self.interval = float(interval)
        self.fleet_window = int(fleet_window)
        self.probe_ttl_ms = max(1, round(probe_ttl * 1000))
        self.key = f"{prefix}{breaker.name}:"
        self.instance = uuid.uuid4().hex
        self.healthy = False
        self.lease_held = False
        self.exchanges = 0
        self.errors = 0
        self._events: deque[Transition] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent = (0, 0, 0)
        self._epoch: int | None = None
        self._override_seen: str | None = None
        self._warned_at = -math.inf
        self._release = client.register_script(_RELEASE)
        self._refresh = client.register_script(_REFRESH)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SharedBreakerState:
        """Hook into the breaker and start the exchange thread (idempotent)."""
        if self._thread is not None:
            return self
        self._sent = _closed_counts(self.breaker)
        self.breaker.add_listener(self._on_transition)
        self.breaker.set_half_open_gate(self._may_probe)
        self._thread = threading.Thread(
            target=self._run, name=f"safeship-shared-{self.breaker.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and unhook; the breaker keeps working alone."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.breaker.remove_listener(self._on_transition)
        self.breaker.set_half_open_gate(None)

    def __enter__(self) -> SharedBreakerState:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.exchange_once()
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- hooks called from the breaker (cheap, never I/O) ------------------------------

    def _on_transition(self, event: Transition) -> None:
        if not event.reason.startswith(_PEER):
            self._events.append(event)
            self._wake.set()

    def _may_probe(self) -> bool:
        if not self.healthy or self.lease_held:
            return True
        self._wake.set()  # try for the lease now rather than at the next tick
        return False

    # -- one exchange --------------------------------------------------------------------

    def exchange_once(self) -> bool:
        """Publish local news, read the fleet's, apply it; False when Redis failed."""
        try:
            self._publish_events()
            view = self._read_fleet()
            self._apply(view)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: decide locally
            self._failed(exc)
            return False
        self.healthy = True
        self.exchanges += 1
        return True

    def _failed(self, exc: Exception) -> None:
        self.healthy = False
        self.lease_held = False
        self.errors += 1
        self._events.clear()
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "resilience.shared.redis_unavailable",
                extra={"breaker": self.breaker.name, "error": repr(exc)},
            )

    def _publish_events(self) -> None:
        while self._events:
            event = self._events.popleft()
            if event.to_state is State.OPEN:
                self._publish_open()
            elif event.to_state is State.CLOSED and event.reason != "reset":
                self._publish_closed()
            if event.reason in ("manual", "reset") or event.to_state in _MANUAL:
                self._publish_override(event)

    def _publish_open(self) -> None:
        remaining = self.breaker.open_remaining()
        if remaining is None or remaining <= 0:
            return
        self.client.set(self.key + "open", self.instance, px=max(1, round(remaining * 1000)))
        self._drop_lease()

    def _publish_closed(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.key + "open")
        pipe.incr(self.key + "epoch")
        results = pipe.execute()
        self._epoch = int(results[1])
        self._drop_lease()

    def _publish_override(self, event: Transition) -> None:
        override = json.dumps({"state": event.to_state.value, "id": uuid.uuid4().hex})
        self._override_seen = override
        self.client.set(self.key + "override", override)
        if event.to_state is State.CLOSED:
            self._publish_closed()

    def _drop_lease(self) -> None:
        if self.lease_held:
            self._release(keys=[self.key + "probe"], args=[self.instance])
            self.lease_held = False

    def _read_fleet(self) -> dict[str, Any]:
        now = int(time.time())
        calls, failures, slows = _closed_counts(self.breaker)
        sent = self._sent
        self._sent = (calls, failures, slows)
        epoch_key = self.key + "epoch"
        pipe = self.client.pipeline(transaction=False)
        pipe.get(epoch_key)
        pipe.get(self.key + "override")
        pipe.pttl(self.key + "open")
        first = pipe.execute()
        epoch = int(first[0] or 0)
        window = f"{self.key}w:{epoch}:"
        pipe = self.client.pipeline(transaction=False)
        delta = (calls - sent[0], failures - sent[1], slows - sent[2])
        if any(delta) and self.breaker.state is State.CLOSED:
            bucket = f"{window}{now}"
            pipe.hincrby(bucket, "c", delta[0])
            pipe.hincrby(bucket, "f", delta[1])
            pipe.hincrby(bucket, "s", delta[2])
            pipe.expire(bucket, self.fleet_window + 5)
        for second in range(now - self.fleet_window + 1, now + 1):
            pipe.hmget(f"{window}{second}", "c", "f", "s")
        rows = pipe.execute()[-self.fleet_window :]
        totals = [sum(int(row[i] or 0) for row in rows) for i in range(3)]
        return {"epoch": epoch, "override": first[1], "open_ms": int(first[2]), "fleet": totals}

    def _apply(self, view: dict[str, Any]) -> None:
        self._apply_override(view["override"])
        self._apply_epoch(view["epoch"])
        state = self.breaker.state
        if view["open_ms"] > 0:
            if state is State.CLOSED or (state is State.HALF_OPEN and not self.lease_held):
                self.breaker.open_for(view["open_ms"] / 1000, reason="peer opened")
            return
        if state is State.CLOSED and self.breaker.window.kind != "consecutive":
            calls, failures, slows = view["fleet"]
            if self.breaker.window.judge(calls, failures, slows):
                self.breaker.open_for(self.breaker.open_duration, reason="peer fleet threshold")
                self._events.append(_fleet_open(self.breaker))
                self._publish_events()
            return
        self._manage_lease(state)

    def _apply_override(self, raw: bytes | str | None) -> None:
        if raw is None:
            return
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text == self._override_seen:
            return
        self._override_seen = text
        state = State(json.loads(text)["state"])
        actions = {
            State.FORCED_OPEN: self.breaker.force_open,
            State.DISABLED: self.breaker.disable,
            State.METRICS_ONLY: self.breaker.metrics_only,
            State.CLOSED: self.breaker.reset,
        }
        if state in actions and self.breaker.state is not state:
            actions[state](reason=f"{_PEER} manual")

    def _apply_epoch(self, epoch: int) -> None:
        previous, self._epoch = self._epoch, epoch
        if previous is not None and epoch != previous:
            self._sent = _closed_counts(self.breaker)
            self.breaker.close_if_open(reason=f"{_PEER} closed")

    def _manage_lease(self, state: State) -> None:
        probe = self.key + "probe"
        if state is State.HALF_OPEN and self.lease_held:
            self._refresh(keys=[probe], args=[self.instance, self.probe_ttl_ms])
            return
        remaining = self.breaker.open_remaining()
        due = remaining is not None and remaining <= self.interval
        if state is State.OPEN and not self.lease_held and due:
            got = self.client.set(probe, self.instance, nx=True, px=self.probe_ttl_ms)
            self.lease_held = bool(got)


def share_breaker(breaker: Breaker, client: Any, **options: Any) -> SharedBreakerState:
    """Start sharing ``breaker`` through the sync redis-py ``client``; returns the handle.

    Give the client short timeouts (e.g. ``socket_timeout=0.5``) so an unreachable Redis
    is noticed quickly; options are those of :class:`SharedBreakerState`.
    """
    return SharedBreakerState(breaker, client, **options).start()


def _closed_counts(breaker: Breaker) -> tuple[int, int, int]:
    counts = breaker.counts()
    failures = counts["failure"] + counts["slow_failure"]
    slows = counts["slow_success"] + counts["slow_failure"]
    return (counts["success"] + counts["slow_success"] + failures, failures, slows)


def _fleet_open(breaker: Breaker) -> Transition:
    return Transition(breaker.name, State.CLOSED, State.OPEN, time.time(), "fleet threshold")
