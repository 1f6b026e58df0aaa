"""HTTP webhook sink (httpx): POST each event's payload with an HMAC-SHA256 signature.

Headers: ``Webhook-Id`` (event id), ``Webhook-Timestamp`` (Unix seconds), ``Webhook-Event``
(type) and ``Webhook-Signature: sha256=<hex>`` over ``"{timestamp}.{id}.{body}"``.
2xx delivers; 408, 425, 429 and 5xx retry (honouring ``Retry-After``); other 4xx are
permanent (dead letter at once); read and write timeouts retry (counted against the
event); an event httpx cannot send (a header value it cannot encode, a bad URL) is
permanent; an endpoint that cannot be reached (connection refused, connect timeout) is the
sink being unavailable, which counts no attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from safeship.outbox._model import DELIVERED, Event, Outcome, Status
from safeship.outbox.sinks._base import SinkUnavailableError, error_text, publish_per_key

__all__ = ["WebhookSink", "sign"]

_RETRYABLE_4XX = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: int, event_id: str, body: bytes) -> str:
    """The ``Webhook-Signature`` value a receiver recomputes to verify a delivery."""
    message = f"{timestamp}.{event_id}.".encode() + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSink:
    """Deliver to ``url`` (or ``url_for(event)``), keys in parallel, each key in order."""

    ordered = False

    def __init__(
        self,
        url: str | Callable[[Event], str],
        *,
        secret: bytes,
        timeout: float = 10.0,
        concurrency: int = 32,
        client: Any = None,
    ) -> None:
        if not secret or len(secret) < 16:
            raise ValueError("WebhookSink secret must be at least 16 bytes")
        if timeout <= 0 or concurrency < 1:
            raise ValueError("WebhookSink timeout must be > 0 and concurrency >= 1")
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._concurrency = concurrency
        self._client = client
        self._owned = client is None

    async def open(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self._timeout)

    async def close(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _headers(self, event: Event) -> dict[str, str]:
        timestamp = int(time.time())
        return {
            **event.headers,
            "Content-Type": "application/json",
            "Webhook-Id": str(event.id),
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Event": event.type,
            "Webhook-Signature": sign(self._secret, timestamp, str(event.id), event.payload),
        }

    async def _send(self, event: Event) -> Outcome:
        import httpx

        try:
            url = self._url if isinstance(self._url, str) else self._url(event)
            request = self._client.build_request(
                "POST", url, content=event.payload, headers=self._headers(event)
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError, ValueError) as exc:
            return Outcome(Status.PERMANENT, f"cannot build the request: {error_text(exc)}")
        try:
            response = await self._client.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SinkUnavailableError(f"webhook unreachable: {error_text(exc)}") from exc
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            return Outcome(Status.PERMANENT, f"cannot send the request: {error_text(exc)}")
        except httpx.HTTPError as exc:
            return Outcome(Status.RETRY, error_text(exc))
        code = response.status_code
        if 200 <= code < 300:
            return DELIVERED
        error = f"HTTP {code}: {response.text[:500]}"
        if code >= 500 or code in _RETRYABLE_4XX:
            return Outcome(Status.RETRY, error, _retry_after(response.headers.get("Retry-After")))
        return Outcome(Status.PERMANENT, error)

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        return await publish_per_key(events, self._send, concurrency=self._concurrency)
