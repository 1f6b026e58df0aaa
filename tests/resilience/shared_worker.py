"""A worker process for the shared-state tests, driven by JSON lines on stdin.

Run as ``python shared_worker.py <redis url> <breaker name>``; each input line is a
command, each output line its JSON answer.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import redis

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    ConsecutiveFailures,
    CountWindow,
    default_registry,
)
from safeship.resilience.redis_shared import share_breaker


def main() -> None:
    url, name, window = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = ConsecutiveFailures(3) if window == "consecutive" else CountWindow(10, minimum_calls=6)
    breaker = Breaker(
        name, window=spec, open_duration=1.0, half_open_calls=2, registry=default_registry
    )
    client = redis.Redis.from_url(url, socket_timeout=1)
    shared = share_breaker(breaker, client, interval=0.02, probe_ttl=5)
    trials = 0
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "fail":
            for _ in range(command["n"]):
                with contextlib.suppress(ConnectionError, BreakerOpen):
                    breaker.call(_fail)
            answer: object = breaker.state.value
        elif op == "ok":
            try:
                breaker.call(lambda: None)
                answer = "ran"
            except BreakerOpen:
                answer = "rejected"
        elif op == "probe":
            # Keep knocking until the fleet decides; count the trials this process ran.
            deadline = time.monotonic() + command["seconds"]
            while time.monotonic() < deadline and breaker.state.value != "closed":
                try:
                    before = breaker.state.value
                    breaker.call(lambda: time.sleep(0.01))
                    trials += before != "closed"
                except BreakerOpen:
                    time.sleep(0.005)
            answer = {"state": breaker.state.value, "trials": trials}
        elif op == "wait":
            deadline = time.monotonic() + command["seconds"]
            while time.monotonic() < deadline and breaker.state.value != command["state"]:
                time.sleep(0.005)
            answer = breaker.state.value
        elif op == "force_open":
            breaker.force_open()
            answer = breaker.state.value
        elif op == "reset":
            breaker.reset()
            answer = breaker.state.value
        else:
            break
        print(json.dumps(answer), flush=True)
    shared.stop()


def _fail() -> None:
    raise ConnectionError("dependency down")


if __name__ == "__main__":
    main()
