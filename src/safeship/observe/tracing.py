"""OpenTelemetry tracing for an ASGI app (extra ``safeship[otel]``).

`enable_tracing` wraps the app so every request gets a server span that continues an
incoming W3C ``traceparent``, is named by its route template (never the raw path), and
is announced back in a ``traceparent`` response header. Log events carry ``trace_id``
and ``span_id`` (see `safeship.observe._logging.add_trace_context`). The exporter is
chosen by the standard ``OTEL_*`` environment variables. Without the extra, safeship
runs untraced and says how to enable it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from safeship.errors import SafeshipError
from safeship.observe._logging import get_logger
from safeship.observe._metrics import method_label, route_label

_log = get_logger("safeship.tracing")

INSTALL_HINT = "tracing needs OpenTelemetry: pip install 'safeship[otel]'"
DEFAULT_EXCLUDED_URLS = "/livez,/readyz,/startupz,/metrics"


class TracingUnavailableError(SafeshipError, ImportError):
    """OpenTelemetry is not installed (raised only with ``required=True``)."""


def tracing_available() -> bool:
    """Whether the ``otel`` extra is installed."""
    try:
        import opentelemetry.instrumentation.asgi
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def enable_tracing(
    app: Any,
    *,
    service_name: str | None = None,
    tracer_provider: Any = None,
    configure_provider: bool = True,
    excluded_urls: str = DEFAULT_EXCLUDED_URLS,
    required: bool = False,
) -> Any:
    """Return ``app`` wrapped with OpenTelemetry server spans.

    With ``configure_provider`` and no ``tracer_provider``, a global SDK provider is set
    up from ``OTEL_*`` variables unless one exists already. When the extra is missing the
    app is returned unchanged and a warning says how to install it (``required=True``
    raises `TracingUnavailableError` instead).
    """
    if not tracing_available():
        if required:
            raise TracingUnavailableError(INSTALL_HINT)
        _log.warning("tracing.unavailable", hint=INSTALL_HINT)
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    if tracer_provider is None and configure_provider:
        configure_tracer_provider(service_name=service_name)
    return OpenTelemetryMiddleware(
        _RouteNamedSpan(app),
        excluded_urls=excluded_urls,
        default_span_details=_span_details,
        tracer_provider=tracer_provider,
        exclude_spans=["receive", "send"],
    )


def _span_details(scope: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Name spans by method only at first; the route is known once routing ran."""
    return method_label(str(scope.get("method", "HTTP"))), {}


class _RouteNamedSpan:
    """Inside the server span: add ``traceparent`` to the response, name span by route."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import trace

        span = trace.get_current_span()
        ctx = span.get_span_context()
        traceparent = (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
        )

        async def send_traced(message: Any) -> None:
            if message["type"] == "http.response.start":
                _name_span(span, scope, int(message["status"]))
                if ctx.is_valid:
                    headers = [*message.get("headers", ()), (b"traceparent", traceparent)]
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_traced)


def _name_span(span: Any, scope: Mapping[str, Any], status: int) -> None:
    """Rename the span by route template once routing ran (before the span ends)."""
    route = route_label(scope, status)
    span.update_name(f"{method_label(str(scope.get('method', 'HTTP')))} {route}")
    span.set_attribute("http.route", route)


def configure_tracer_provider(*, service_name: str | None = None) -> Any:
    """Install a global SDK tracer provider with exporters from ``OTEL_TRACES_EXPORTER``.

    Does nothing (returns the existing provider) when an SDK provider is already set or
    ``OTEL_SDK_DISABLED=true``. ``otlp`` (the OTel default) needs an OTLP exporter
    package; ``console`` prints spans; ``none`` exports nothing.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider) or _env_true("OTEL_SDK_DISABLED"):
        return current
    attributes = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in _exporter_names():
        _add_exporter(provider, name)
    trace.set_tracer_provider(provider)
    return provider


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _exporter_names() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    return [n.strip().lower() for n in raw.split(",") if n.strip()]


def _add_exporter(provider: Any, name: str) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if name == "none":
        return
    if name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        return
    if name != "otlp":
        _log.warning("tracing.unknown_exporter", exporter=name)
        return
    exporter = _otlp_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))


def _otlp_exporter() -> Any:
    grpc = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    try:
        if grpc.strip() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
    except ImportError:
        _log.warning(
            "tracing.exporter_missing",
            hint="spans are created but not exported: pip install opentelemetry-exporter-otlp "
            "(or set OTEL_TRACES_EXPORTER=console or none)",
        )
        return None
    return OTLPSpanExporter()
