"""HTTP pieces of idempotency: per-route options, problem+json answers, replays, the tee.

Pure ASGI (no Starlette import), so the middleware works under any ASGI framework.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from safeship.idempotency._errors import IdempotencyConfigError
from safeship.idempotency._model import StoredResponse

__all__ = [
    "DOCS_URL",
    "OPTIONS_ATTRIBUTE",
    "REPLAY_HEADERS",
    "ResponseLike",
    "RouteOptions",
    "Tee",
    "check_help_url",
    "idempotent",
    "send_problem",
    "send_replay",
    "should_store",
    "stored_from",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

#: Where `idempotent` leaves a route's options on its endpoint.
OPTIONS_ATTRIBUTE = "__safeship_idempotency__"
#: Response headers a replay repeats; the rest (Date, Set-Cookie, Server, ...) are not kept.
REPLAY_HEADERS = frozenset(
    {
        b"content-type",
        b"content-encoding",
        b"content-language",
        b"content-location",
        b"location",
        b"etag",
        b"last-modified",
        b"link",
        b"cache-control",
        b"vary",
        b"retry-after",
    }
)
#: Client errors that say "fix the request and send it again": never stored, key released.
RETRYABLE_CLIENT_ERRORS = frozenset(
    {400, 401, 403, 404, 405, 406, 408, 409, 411, 412, 413, 415, 422, 423, 425, 428, 429, 431}
)
PROBLEM_TYPE = "urn:safeship:idempotency:"
#: Where a problem's ``Link: rel="help"`` points by default: safeship's idempotency docs,
#: whose section ``#<problem name>`` explains that answer.
DOCS_URL = "https://github.com/safeship/safeship/blob/main/docs/idempotency.md"
_URL_REFUSED = frozenset('<>"\\^`{|}#') | frozenset(chr(c) for c in range(0x21))
MiB = 1024 * 1024


class ResponseLike(Protocol):
    """What a handler or a ``reconcile`` hook hands back (a Starlette ``Response`` fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def body(self) -> bytes | memoryview: ...

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]: ...


#: ``reconcile(key, scope)``: the outcome of a key whose first run raised or died.
#: Return a response to store and replay, or None to say "it did not act": run it again.
Reconcile = Callable[[str, Scope], Awaitable[ResponseLike | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteOptions:
    """How one route treats ``Idempotency-Key`` (validated at construction).

    ``ttl``: seconds a finished key is kept and replayed (published in the docs of the
    route).  ``lease``: seconds a running first request holds the key without renewing;
    it renews every third of it while alive, so a long request keeps its key and a
    killed one frees it in at most ``lease``.  ``reconcile``: decides a key whose first
    run raised or died; without it the caller gets 409 "outcome unknown".
    ``unknown_ttl``: seconds an unknown outcome holds the key (by the store's clock)
    before it is released and the next request with it runs -- a retry is told
    "outcome unknown" for that long, never blocked for the whole ``ttl``.
    """

    required: bool = True
    ttl: float = 86_400.0
    lease: float = 30.0
    unknown_ttl: float = 300.0
    store_server_errors: bool = False
    reconcile: Reconcile | None = None
    max_body_bytes: int = MiB
    max_response_bytes: int = MiB
    replay_headers: frozenset[bytes] = field(default=REPLAY_HEADERS)

    def __post_init__(self) -> None:
        for name in ("ttl", "lease", "unknown_ttl"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise IdempotencyConfigError(f"{name} must be a positive number of seconds")
        if self.lease > self.ttl:
            raise IdempotencyConfigError("lease must not be longer than ttl")
        for name in ("max_body_bytes", "max_response_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 < value <= 256 * MiB:
                raise IdempotencyConfigError(f"{name} must be an int in 1..{256 * MiB}")
        if self.reconcile is not None and not callable(self.reconcile):
            raise IdempotencyConfigError("reconcile must be an async callable(key, scope)")


def idempotent(
    *,
    required: bool = True,
    ttl: float = 86_400.0,
    lease: float = 30.0,
    unknown_ttl: float = 300.0,
    store_server_errors: bool = False,
    reconcile: Reconcile | None = None,
    max_body_bytes: int = MiB,
    max_response_bytes: int = MiB,
) -> Callable[[F], F]:
    """Mark a route's endpoint idempotent; `IdempotencyMiddleware` applies the options."""
    options = RouteOptions(
        required=required,
        ttl=ttl,
        lease=lease,
        unknown_ttl=unknown_ttl,
        store_server_errors=store_server_errors,
        reconcile=reconcile,
        max_body_bytes=max_body_bytes,
        max_response_bytes=max_response_bytes,
    )

    def mark(endpoint: F) -> F:
        setattr(endpoint, OPTIONS_ATTRIBUTE, options)
        return endpoint

    return mark


def check_help_url(url: str | None) -> None:
    """Refuse a ``help_url`` that is not an absolute http(s) URL fit for a ``Link`` header
    (no spaces, controls, ``<>``, quotes or fragment: the problem's name is the fragment)."""
    if url is None:
        return
    if (
        not isinstance(url, str)
        or not url.startswith(("https://", "http://"))
        or len(url) > 2048
        or not url.isascii()
        or any(c in _URL_REFUSED for c in url)
    ):
        raise IdempotencyConfigError(
            "help_url must be an absolute http(s) URL of at most 2048 characters, without "
            'a fragment, spaces or <>"; or None for no Link header'
        )


async def send_problem(
    send: Send,
    status: int,
    name: str,
    title: str,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    help_url: str | None = None,
) -> None:
    """An RFC 9457 ``application/problem+json`` answer, typed ``urn:safeship:idempotency:NAME``;
    with ``help_url``, ``Link: <help_url#NAME>; rel="help"`` points at its explanation."""
    body = json.dumps(
        {"type": PROBLEM_TYPE + name, "title": title, "status": status, "detail": detail}
    ).encode()
    start = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if help_url is not None:
        start.append((b"link", f'<{help_url}#{name}>; rel="help"'.encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _location(response: StoredResponse) -> bytes | None:
    return next((v for k, v in response.headers if k == b"location"), None)


async def send_replay(send: Send, response: StoredResponse, *, help_url: str | None = None) -> None:
    """Send a stored response again, marked ``Idempotent-Replayed: true``.

    A body over the cap was not kept: its ``Location`` is served instead (the status
    when it was 201 or 202, else 303 See Other), so the replay is never a truncated body.
    """
    status, body = response.status, response.body
    headers = [(k, v) for k, v in response.headers]
    if not response.body_kept:
        location = _location(response)
        if location is None:
            await send_problem(
                send,
                409,
                "response-not-kept",
                "Response too large to replay",
                "This key's request ran and succeeded; its response was over the size "
                "kept for replay and named no Location. It will not run again.",
                help_url=help_url,
            )
            return
        status = status if status in (201, 202) else 303
        headers, body = [(b"location", location)], b""
    headers += [(b"content-length", str(len(body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def should_store(status: int, options: RouteOptions) -> bool:
    """Whether a finished response is kept for replay (else the key is released)."""
    if status >= 500:
        return options.store_server_errors
    return status not in RETRYABLE_CLIENT_ERRORS


def stored_from(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    body_kept: bool,
    keep: frozenset[bytes],
) -> StoredResponse:
    kept = []
    for name, value in headers:
        name = name.lower()
        if name in keep:
            kept.append((name, value))
    return StoredResponse(status, tuple(kept), body if body_kept else b"", body_kept)


class Tee:
    """Copies a live response as it is sent, up to ``cap`` body bytes; never alters it."""

    __slots__ = ("cap", "chunks", "complete", "headers", "kept", "size", "status")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.kept = True
        self.complete = False

    def see(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.kept and chunk:
                if self.size > self.cap:
                    self.kept, self.chunks = False, []
                else:
                    self.chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True

    def stored(self, keep: frozenset[bytes]) -> StoredResponse:
        assert self.status is not None
        return stored_from(
            self.status, self.headers, b"".join(self.chunks), body_kept=self.kept, keep=keep
        )
