"""A relay process for the fault tests: relays to NATS until SIGTERM, then prints stats."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from safeship.outbox import Relay, RelayConfig
from safeship.outbox.sinks.nats import NatsSink


async def main(database: str, nats_url: str, subject: str, lease_ttl: float) -> None:
    sink = NatsSink(nats_url, subject=subject, ack_timeout=3.0)
    relay = Relay(database, sink, config=RelayConfig(poll_interval=0.1, lease_ttl=lease_ttl))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.stop)
    print("ready", flush=True)
    await relay.run()
    print(json.dumps({"published": relay.published, "duplicates": sink.duplicates}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
