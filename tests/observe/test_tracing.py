"""Tracing: spans per request, W3C traceparent in and out, trace ids in logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.observe import tracing
from safeship.observe._logging import configure_logging, get_logger
from safeship.web import protect

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging(fmt="json", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    structlog.reset_defaults()


async def order(request: Request) -> PlainTextResponse:
    get_logger("app").info("order.read", order_id=request.path_params["order_id"])
    return PlainTextResponse("ok")


def traced_app(provider: TracerProvider) -> object:
    app = protect(Starlette(routes=[Route("/orders/{order_id}", order)]), configure_logs=False)
    return tracing.enable_tracing(app, tracer_provider=provider)


async def test_incoming_traceparent_is_continued_and_echoed(
    provider: TracerProvider, exporter: InMemorySpanExporter, log_stream: io.StringIO
) -> None:
    transport = httpx.ASGITransport(app=traced_app(provider))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/orders/42", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    assert response.headers["traceparent"].split("-")[1] == INCOMING_TRACE
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == INCOMING_TRACE
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/orders/{order_id}"
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    app_event = next(e for e in events if e["event"] == "order.read")
    access = next(e for e in events if e["event"] == "http.request")
    assert app_event["trace_id"] == INCOMING_TRACE
    assert access["trace_id"] == INCOMING_TRACE
    assert response.headers["traceparent"].split("-")[2] == app_event["span_id"]


async def test_new_trace_started_without_traceparent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    transport = httpx.ASGITransport(app=traced_app(provider))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/orders/1")
    trace_id = response.headers["traceparent"].split("-")[1]
    assert trace_id != "0" * 32
    assert format(exporter.get_finished_spans()[0].context.trace_id, "032x") == trace_id


async def test_probes_are_not_traced(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    transport = httpx.ASGITransport(app=traced_app(provider))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/metrics")
    assert exporter.get_finished_spans() == ()


def test_missing_extra_returns_app_and_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.asgi", None)
    app = object()
    with caplog.at_level(logging.WARNING, logger="safeship.tracing"):
        assert tracing.enable_tracing(app) is app
    assert "pip install 'safeship[otel]'" in caplog.text
    with pytest.raises(tracing.TracingUnavailableError, match=r"safeship\[otel\]"):
        tracing.enable_tracing(app, required=True)


def test_configure_provider_respects_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    from opentelemetry import trace

    assert tracing.configure_tracer_provider() is trace.get_tracer_provider()
