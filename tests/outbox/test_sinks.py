"""Each sink against its real server: confirmations, failures and routing."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from safeship.outbox import Event, Status
from safeship.outbox._model import SKIPPED, uuid7


def event(key: str = "k1", n: int = 0, type_: str = "created") -> Event:
    return Event(
        seq=n,
        id=uuid7(),
        aggregate_type="order",
        aggregate_id=key,
        type=type_,
        payload=json.dumps({"n": n}).encode(),
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        created_at=datetime.now(UTC),
    )


@pytest.mark.rabbitmq
async def test_rabbitmq_confirms_persistent_messages_and_fails_unroutable(
    rabbitmq_url: str,
) -> None:
    import aio_pika

    from safeship.outbox.sinks.rabbitmq import RabbitMQSink

    prefix = "outbox-test-" + uuid.uuid4().hex[:8]
    queue_name = prefix + ".created"
    connection = await aio_pika.connect_robust(rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, auto_delete=True)
    sink = RabbitMQSink(rabbitmq_url, routing_key=prefix + ".{type}")
    await sink.open()
    try:
        events = [event(n=i) for i in range(20)]
        outcomes = await sink.publish([*events, event(type_="nowhere")])
        assert [o.status for o in outcomes[:20]] == [Status.DELIVERED] * 20
        assert outcomes[20].status is Status.RETRY and "not routed" in (outcomes[20].error or "")
    finally:
        await sink.close()
    got = []
    async with queue.iterator() as messages:
        async for message in messages:
            got.append(message)
            await message.ack()
            if len(got) == 20:
                break
    assert [m.message_id for m in got] == [str(e.id) for e in events]
    assert got[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()


@pytest.mark.redis
async def test_redis_streams_appends_in_order_with_bounded_length(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from safeship.outbox.sinks.redis_streams import RedisStreamSink

    stream = "outbox-test-" + uuid.uuid4().hex[:8]
    sink = RedisStreamSink(redis_url, stream=stream, maxlen=10_000)
    await sink.open()
    events = [event(n=i) for i in range(50)]
    try:
        outcomes = await sink.publish(events)
    finally:
        await sink.close()
    assert all(o.status is Status.DELIVERED for o in outcomes)
    client = aioredis.Redis.from_url(redis_url)
    entries: Any = await client.xrange(stream)
    await client.delete(stream)
    await client.aclose()
    assert [fields[b"id"].decode() for _, fields in entries] == [str(e.id) for e in events]


class _Hook(BaseHTTPRequestHandler):
    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        code, headers = self.script.pop(0) if self.script else (200, {})
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.script, _Hook.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


async def test_webhook_signs_and_classifies_responses(hook_server: str) -> None:
    from safeship.outbox.sinks.webhook import WebhookSink, sign

    secret = b"s" * 32
    _Hook.script = [(200, {}), (503, {"Retry-After": "7"}), (404, {}), (429, {})]
    sink = WebhookSink(hook_server, secret=secret, concurrency=1)
    await sink.open()
    try:
        outcomes = await sink.publish([event("a"), event("b"), event("c"), event("d")])
    finally:
        await sink.close()
    assert [o.status for o in outcomes] == [
        Status.DELIVERED,
        Status.RETRY,
        Status.PERMANENT,
        Status.RETRY,
    ]
    assert outcomes[1].retry_after == 7.0
    headers, body = _Hook.received[0]
    expected = sign(secret, int(headers["Webhook-Timestamp"]), headers["Webhook-Id"], body)
    assert headers["Webhook-Signature"] == expected


async def test_webhook_stops_a_key_after_its_first_failure(hook_server: str) -> None:
    from safeship.outbox.sinks.webhook import WebhookSink

    _Hook.script = [(500, {})]
    sink = WebhookSink(hook_server, secret=b"k" * 16, concurrency=1)
    await sink.open()
    try:
        outcomes = await sink.publish([event("a", 0), event("a", 1), event("b", 2)])
    finally:
        await sink.close()
    assert [o.status for o in outcomes] == [Status.RETRY, Status.SKIPPED, Status.DELIVERED]


async def test_webhook_connection_refused_is_the_sink_being_unavailable() -> None:
    from safeship.outbox import SinkUnavailableError
    from safeship.outbox.sinks.webhook import WebhookSink

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/", secret=b"k" * 16, timeout=1.0)
    await sink.open()
    try:
        with pytest.raises(SinkUnavailableError, match="unreachable") as raised:
            await sink.publish([event()])
    finally:
        await sink.close()
    assert raised.value.outcomes == [SKIPPED]  # not tried to the end: no attempt counted


async def test_webhook_refuses_an_event_httpx_cannot_send_and_sends_the_rest(
    hook_server: str,
) -> None:
    from safeship.outbox.sinks.webhook import WebhookSink

    sink = WebhookSink(hook_server, secret=b"k" * 16, concurrency=1)
    unsendable = dataclasses.replace(event("a", 0), headers={"x-name": "Grüße"})  # not ASCII
    await sink.open()
    try:
        outcomes = await sink.publish([unsendable, event("a", 1), event("b", 2)])
    finally:
        await sink.close()
    assert [o.status for o in outcomes] == [Status.PERMANENT, Status.SKIPPED, Status.DELIVERED]
    assert "cannot build the request" in (outcomes[0].error or "")


@pytest.mark.rabbitmq
async def test_rabbitmq_refuses_an_oversized_body_for_that_event_only(rabbitmq_url: str) -> None:
    from safeship.outbox.sinks.rabbitmq import RabbitMQSink

    prefix = "outbox-test-" + uuid.uuid4().hex[:8]
    sink = RabbitMQSink(rabbitmq_url, routing_key=prefix + ".{type}", max_message_bytes=1024)
    import aio_pika

    connection = await aio_pika.connect_robust(rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(prefix + ".created", auto_delete=True)
    await sink.open()
    big = dataclasses.replace(event(n=1), payload=b'"' + b"x" * 2000 + b'"')
    try:
        outcomes = await sink.publish([event(n=0), big, event(n=2)])
    finally:
        await sink.close()
    assert [o.status for o in outcomes] == [Status.DELIVERED, Status.PERMANENT, Status.DELIVERED]
    assert "max_message_bytes" in (outcomes[1].error or "")
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()


@pytest.mark.redis
async def test_redis_error_reply_for_one_entry_counts_against_that_event(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from safeship.outbox.sinks.redis_streams import RedisStreamSink

    name = "outbox-test-" + uuid.uuid4().hex[:8]
    client = aioredis.Redis.from_url(redis_url)
    await client.set(name + ":wrong", "not a stream")  # XADD to it answers WRONGTYPE
    sink = RedisStreamSink(redis_url, stream=name + ":{aggregate_id}")
    await sink.open()
    try:
        outcomes = await sink.publish([event("ok", 0), event("wrong", 1), event("ok", 2)])
    finally:
        await sink.close()
        await client.delete(name + ":wrong", name + ":ok")
        await client.aclose()
    assert [o.status for o in outcomes] == [Status.DELIVERED, Status.RETRY, Status.DELIVERED]
    assert "WRONGTYPE" in (outcomes[1].error or "")


async def test_kafka_sink_produces_when_a_broker_is_reachable() -> None:
    try:
        socket.create_connection(("127.0.0.1", 9092), timeout=0.5).close()
    except OSError:
        pytest.skip("no Kafka broker on 127.0.0.1:9092 (Kafka is not on the CI machine)")
    from safeship.outbox.sinks.kafka import KafkaSink

    sink = KafkaSink("127.0.0.1:9092", topic="outbox-test")
    await sink.open()
    try:
        outcomes = await sink.publish([event(n=i) for i in range(5)])
    finally:
        await sink.close()
    assert all(o.status is Status.DELIVERED for o in outcomes)
