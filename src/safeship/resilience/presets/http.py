"""httpx transports that apply a breaker, retries and a timeout per host.

::

    import httpx
    from safeship.resilience.presets.http import ResilientTransport

    client = httpx.Client(transport=ResilientTransport(timeout=5.0))
    client.post("https://graph.example.com/v1/messages", json=payload)

For each host (``host:port``) the transport builds, once, a pipeline
``retry → breaker → timeout`` around the real transport:

* the breaker (``http:<host>``, in the process registry) counts 5xx answers, timeouts and
  connection errors as failures, and any 4xx as a success — the server is up, the request
  was wrong;
* retries (full jitter) cover connection errors, timeouts and the statuses
  408/425/429/500/502/503/504, honour ``Retry-After``, and never retry another 4xx. Only
  ``retry_methods`` (idempotent ones by default) are retried after the request may have
  reached the server; any method is retried when the connection itself failed (the
  request was never sent). Add ``"POST"`` when the API takes idempotency keys. When the
  retries run out the last response is returned, so ``raise_for_status()`` still works;
* the timeout bounds each attempt: async calls are cancelled; sync calls get the
  remaining time written into httpx's own connect/read/write/pool timeouts.

While a host's breaker is open the transport raises
:class:`~safeship.resilience.BreakerOpen` without touching the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from safeship.resilience import _default_registry as registry
from safeship.resilience._breaker import Breaker
from safeship.resilience._classify import RETRYABLE_STATUS
from safeship.resilience._errors import DeadlineExceeded
from safeship.resilience._pipeline import pipeline
from safeship.resilience._retry import Retry
from safeship.resilience._timeout import remaining

__all__ = [
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "ResilientTransport",
    "http_retry",
    "is_server_error",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


def is_server_error(response: object) -> bool:
    """The breaker's result predicate: a 5xx response is a failure, anything else is not."""
    return isinstance(response, httpx.Response) and response.status_code >= 500


def _retryable_response(response: object) -> bool:
    return isinstance(response, httpx.Response) and response.status_code in RETRYABLE_STATUS


def _close(response: object) -> None:
    if isinstance(response, httpx.Response):
        response.close()


async def _aclose(response: object) -> None:
    if isinstance(response, httpx.Response):
        await response.aclose()


def http_retry(*, attempts: int = 3, is_async: bool = False, **options: Any) -> Retry:
    """The transports' retry: transport errors, timeouts and retryable statuses."""
    options.setdefault("retry_on", (httpx.TransportError, DeadlineExceeded))
    options.setdefault("retry_if_result", _retryable_response)
    options.setdefault("discard_result", _aclose if is_async else _close)
    options.setdefault("name", "http")
    return Retry(attempts=attempts, **options)


def _connect_only(retry: Retry) -> Retry:
    return Retry(
        attempts=retry.attempts,
        schedule=retry.schedule,
        deadline=retry.deadline,
        retry_on=_CONNECTION_ERRORS,
        budget=retry.budget,
        name=f"{retry.name}-connect",
        clock=retry.clock,
    )


class _HostPolicies:
    """Builds and caches the per-host pipelines shared by the sync and async transports."""

    def __init__(
        self,
        *,
        retry: Retry | None,
        timeout: float | None,
        retry_methods: Iterable[str],
        breaker_options: dict[str, Any] | None,
        is_async: bool,
    ) -> None:
        self.retry = retry if retry is not None else http_retry(is_async=is_async)
        self.timeout = timeout
        self.retry_methods = frozenset(method.upper() for method in retry_methods)
        self.breaker_options = dict(breaker_options or {})
        self.breaker_options.setdefault("failure_result", is_server_error)
        self.is_async = is_async
        self._cache: dict[tuple[str, bool], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def breaker_for(self, host: str) -> Breaker:
        """The process-wide breaker of ``host`` (created on first use)."""
        name = f"http:{host}"
        return registry.get_or_create(
            name, lambda: Breaker(name, **{**self.breaker_options, "registry": None})
        )

    def handler(self, request: httpx.Request, send: Callable[..., Any]) -> Callable[..., Any]:
        host = _host_of(request)
        full = request.method.upper() in self.retry_methods
        key = (host, full)
        found = self._cache.get(key)
        if found is not None:
            return found
        with self._lock:
            retry = self.retry if full else _connect_only(self.retry)
            pipe = pipeline(retry=retry, breaker=self.breaker_for(host), timeout=self.timeout)
            built = pipe.wrap_async(send) if self.is_async else pipe.wrap_sync(send)
            self._cache[key] = built
        return built


class ResilientTransport(httpx.BaseTransport):
    """A sync httpx transport with per-host breaker, retries and timeout."""

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = 10.0,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
        breaker_options: dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.policies = _HostPolicies(
            retry=retry,
            timeout=timeout,
            retry_methods=retry_methods,
            breaker_options=breaker_options,
            is_async=False,
        )

    def _send(self, request: httpx.Request) -> httpx.Response:
        _clamp_timeouts(request)
        return self.transport.handle_request(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its host's pipeline."""
        response: httpx.Response = self.policies.handler(request, self._send)(request)
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport`."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = 10.0,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
        breaker_options: dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.policies = _HostPolicies(
            retry=retry,
            timeout=timeout,
            retry_methods=retry_methods,
            breaker_options=breaker_options,
            is_async=True,
        )

    async def _send(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its host's pipeline."""
        response: httpx.Response = await self.policies.handler(request, self._send)(request)
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()


def _host_of(request: httpx.Request) -> str:
    url = request.url
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _clamp_timeouts(request: httpx.Request) -> None:
    """Lower httpx's per-phase timeouts to the time left before the sync deadline."""
    left = remaining()
    if left is None:
        return
    current = request.extensions.get("timeout") or {}
    clamped = {}
    for phase in ("connect", "read", "write", "pool"):
        value = current.get(phase)
        clamped[phase] = left if value is None else min(value, left)
    request.extensions = {**request.extensions, "timeout": clamped}
