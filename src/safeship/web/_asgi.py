"""Minimal ASGI plumbing shared by the middleware: types, headers, plain responses."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def header_text(scope: Scope, name: bytes) -> str | None:
    """A request header decoded as latin-1 (never raises), or None."""
    raw = header(scope, name)
    return None if raw is None else raw.decode("latin-1")


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete response in two messages."""
    all_headers: Headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send an RFC 9457 ``application/problem+json`` error."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send_response(
        send,
        status,
        body.encode(),
        content_type=b"application/problem+json",
        headers=headers,
    )


def path_matches(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one (segment-aware)."""
    return PathPrefixes(prefixes)(path)


class PathPrefixes:
    """`path_matches` for a fixed set of prefixes, prepared once for the request path."""

    __slots__ = ("_bases", "_everything", "_starts")

    def __init__(self, prefixes: Iterable[str]) -> None:
        bases = {prefix.rstrip("/") for prefix in prefixes}
        self._everything = "" in bases
        self._bases = frozenset(bases)
        self._starts = tuple(base + "/" for base in bases if base)

    def __call__(self, path: str) -> bool:
        """Whether ``path`` is one of the prefixes or below one."""
        return self._everything or path in self._bases or path.startswith(self._starts)

    @property
    def parts(self) -> tuple[bool, frozenset[str], tuple[str, ...]]:
        """What `__call__` checks, for a caller that checks it inline: whether every
        path matches, the prefixes themselves, and the starts of the paths below them."""
        return self._everything, self._bases, self._starts
