"""The httpx transports against a local server that fails, stalls and answers 4xx/5xx."""

from __future__ import annotations

import httpx
import pytest

from safeship.resilience import BreakerOpen, Constant, RetryEvent, State, get_breaker
from safeship.resilience.presets.http import (
    AsyncResilientTransport,
    ResilientTransport,
    http_retry,
)
from tests.resilience.http_server import Misbehaving

FAST = Constant(0.001)


def sync_client(**options: object) -> httpx.Client:
    options.setdefault("retry", http_retry(schedule=FAST))
    return httpx.Client(transport=ResilientTransport(**options))  # type: ignore[arg-type]


def async_client(**options: object) -> httpx.AsyncClient:
    options.setdefault("retry", http_retry(schedule=FAST, is_async=True))
    return httpx.AsyncClient(transport=AsyncResilientTransport(**options))  # type: ignore[arg-type]


def host_breaker(server: Misbehaving) -> str:
    host, port = server.server_address[:2]
    return f"http:{host!s}:{port}"


def test_a_client_error_is_returned_at_once_and_counts_as_success(http_server: Misbehaving) -> None:
    with sync_client() as client:
        for _ in range(10):
            assert client.get(f"{http_server.url}/status/404").status_code == 404
    assert http_server.hits["/status/404"] == 10
    breaker = get_breaker(host_breaker(http_server))
    assert breaker.state is State.CLOSED
    assert breaker.counts()["success"] == 10


def test_a_flaky_server_is_retried_until_it_answers(http_server: Misbehaving) -> None:
    with sync_client() as client:
        response = client.get(f"{http_server.url}/flaky/2")
    assert response.status_code == 200
    assert http_server.hits["/flaky/2"] == 3


def test_retries_run_out_and_the_last_5xx_is_returned(http_server: Misbehaving) -> None:
    with sync_client() as client:
        response = client.get(f"{http_server.url}/status/503")
    assert response.status_code == 503
    assert http_server.hits["/status/503"] == 3
    with pytest.raises(httpx.HTTPStatusError):
        response.raise_for_status()


def test_retry_after_from_the_server_is_honoured(http_server: Misbehaving) -> None:
    events: list[RetryEvent] = []
    retry = http_retry(schedule=FAST, attempts=2, on_retry=events.append)
    with sync_client(retry=retry) as client:
        client.get(f"{http_server.url}/status/429?retry_after=0")
    assert http_server.hits["/status/429"] == 2
    assert events[0].delay >= 0


def test_a_post_is_not_retried_after_a_5xx_unless_allowed(http_server: Misbehaving) -> None:
    with sync_client() as client:
        assert client.post(f"{http_server.url}/status/503", json={}).status_code == 503
    assert http_server.hits["/status/503"] == 1
    with sync_client(retry_methods={"POST"}) as client:
        client.post(f"{http_server.url}/status/503", json={})
    assert http_server.hits["/status/503"] == 4


def test_repeated_5xx_open_the_host_breaker_and_calls_stop_reaching_it(
    http_server: Misbehaving,
) -> None:
    with sync_client(retry=http_retry(attempts=1)) as client:
        for _ in range(5):
            client.get(f"{http_server.url}/status/500")
        with pytest.raises(BreakerOpen):
            client.get(f"{http_server.url}/ok")
    assert http_server.hits["/ok"] == 0
    assert get_breaker(host_breaker(http_server)).state is State.OPEN


def test_a_dropped_connection_is_a_retried_failure(http_server: Misbehaving) -> None:
    with sync_client() as client, pytest.raises(httpx.TransportError):
        client.get(f"{http_server.url}/drop")
    assert http_server.hits["/drop"] == 3
    assert get_breaker(host_breaker(http_server)).counts()["failure"] == 3


def test_a_stalled_sync_call_is_cut_by_the_deadline(http_server: Misbehaving) -> None:
    retry = http_retry(schedule=FAST, attempts=2)
    with sync_client(timeout=0.2, retry=retry) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{http_server.url}/stall?seconds=5")
    assert http_server.hits["/stall"] == 2


async def test_a_stalled_async_call_is_cancelled_by_the_timeout(http_server: Misbehaving) -> None:
    retry = http_retry(schedule=FAST, attempts=2, is_async=True)
    async with async_client(timeout=0.2, retry=retry) as client:
        with pytest.raises(TimeoutError):
            await client.get(f"{http_server.url}/stall?seconds=5")
    assert http_server.hits["/stall"] == 2


async def test_async_transport_retries_closes_and_returns(http_server: Misbehaving) -> None:
    async with async_client() as client:
        response = await client.get(f"{http_server.url}/flaky/1")
        assert response.status_code == 200
        assert (await client.get(f"{http_server.url}/status/400")).status_code == 400
    assert http_server.hits["/flaky/1"] == 2
    assert http_server.hits["/status/400"] == 1


def test_nothing_listening_is_a_connection_failure_retried_for_any_method() -> None:
    with sync_client() as client, pytest.raises(httpx.ConnectError):
        client.post("http://127.0.0.1:1/send", json={})
    breaker = get_breaker("http:127.0.0.1:1")
    assert breaker.counts()["failure"] == 3
