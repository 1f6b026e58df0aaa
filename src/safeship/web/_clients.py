"""Who the client is: the socket peer, or the address a proxy the operator trusts forwarded.

Proxy headers (``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) are set by whoever
sends the request, so they count only when the direct peer is a proxy the operator
named: then the client is the right-most address of the chain that is not itself a
trusted proxy. `ClientAddresses.settle` writes that address into ``scope["client"]``,
once per request, so the brute-force limiter, the access log and the app all read the
same one.

A server may already have rewritten ``scope["client"]`` from a proxy header before the
app runs (uvicorn does so by default for requests from 127.0.0.1): the socket peer is
then lost. Such a rewrite shows as a client address that is one of the forwarded ones.
With no trusted proxy, the client is then unknown (``scope["client"]`` becomes None, and
every such request counts as the one client ``"unknown"``, as the proxy it came through
would); with trusted proxies, the chain is read as if the lost peer had been one of
them, which holds when the server trusts no more proxies than safeship does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from safeship.errors import SafeshipError
from safeship.web._asgi import ASGIApp, IPNetwork, Receive, Scope, Send, header_text

ProxyHeader = Literal["x-forwarded-for", "forwarded", "x-real-ip"]
PROXY_HEADERS: tuple[ProxyHeader, ...] = ("x-forwarded-for", "forwarded", "x-real-ip")
#: The request header names that carry forwarded client addresses (lower-case bytes).
PROXY_HEADER_KEYS: frozenset[bytes] = frozenset(name.encode() for name in PROXY_HEADERS)
#: The client of a request whose socket peer is unknown (a Unix socket, or a peer the
#: server replaced with a forwarded address safeship does not trust).
UNKNOWN = "unknown"


class TrustedProxyError(SafeshipError, ValueError):
    """A trusted proxy entry is not an IP address or CIDR range, or the header is unknown."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse IPs or CIDR ranges; a bad entry fails with the value named."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise TrustedProxyError(
                f"trusted_proxies: {value!r} is not an IP address or CIDR range "
                "(for example 10.0.0.0/8, 192.0.2.7 or ::1)"
            ) from exc
    return tuple(networks)


class ClientAddresses:
    """The client address of each request under one list of trusted proxies.

    ``trusted_proxies`` are IPs or CIDR ranges (parsed here, once); ``header`` is the one
    proxy header your proxies set and overwrite or append to (the others are ignored,
    since a client could send them through the proxy untouched).
    """

    __slots__ = ("header", "proxies")

    def __init__(
        self, trusted_proxies: Iterable[str] = (), *, header: ProxyHeader = "x-forwarded-for"
    ) -> None:
        if header not in PROXY_HEADERS:
            raise TrustedProxyError(
                f"proxy header must be one of {', '.join(PROXY_HEADERS)}, got {header!r}"
            )
        self.proxies: tuple[IPNetwork, ...] = parse_networks(trusted_proxies)
        self.header: ProxyHeader = header

    def settle(self, scope: Scope) -> str:
        """`address`, also written to ``scope["client"]`` when it is not the peer the
        server gave (idempotent: settling again changes nothing)."""
        address = self.address(scope)
        client = scope.get("client")
        if client and address != str(client[0]):
            scope["client"] = None if address == UNKNOWN else (address, 0)
        return address

    def address(self, scope: Scope) -> str:
        """The client's address (``"unknown"`` when the socket peer is not known)."""
        client = scope.get("client")
        if not client:
            return UNKNOWN
        peer = str(client[0])
        forwarded: dict[bytes, list[str]] | None = None
        for name, value in scope.get("headers", ()):
            if name in PROXY_HEADER_KEYS:
                if forwarded is None:
                    forwarded = {}
                forwarded.setdefault(name, []).append(bytes(value).decode("latin-1"))
        if forwarded is None:
            return peer  # nothing forwarded: the peer is the client
        return self._resolve(peer, forwarded)

    def _resolve(self, peer: str, forwarded: dict[bytes, list[str]]) -> str:
        chains = {name: _chain(name, values) for name, values in forwarded.items()}
        chain = chains.get(self.header.encode(), [])
        if any(peer in hops for hops in chains.values()):
            # The server (or a layer before) already put a forwarded address here.
            if not self.proxies:
                return UNKNOWN
            at = len(chain) - 1 - chain[::-1].index(peer) if peer in chain else -1
            if at < 0 or not all(self.trusts(hop) for hop in chain[at + 1 :]):
                return UNKNOWN
            return self._walk(chain, peer)
        if not self.proxies or not self.trusts(peer):
            return peer
        return self._walk(chain, peer)

    def _walk(self, chain: Sequence[str], peer: str) -> str:
        """The right-most hop that is not a trusted proxy (``peer`` when it is no IP)."""
        for hop in reversed(chain):
            if not self.trusts(hop):
                return hop if _is_ip(hop) else peer
        return chain[0] if chain and _is_ip(chain[0]) else peer

    def trusts(self, host: str) -> bool:
        """Whether ``host`` is one of the trusted proxies."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.proxies)


class ClientAddressMiddleware:
    """Settle ``scope["client"]`` (see `ClientAddresses`) before the app reads it; from a
    trusted proxy, ``X-Forwarded-Proto`` also sets the scheme (``http`` or ``https``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Iterable[str] = (),
        header: ProxyHeader = "x-forwarded-for",
    ) -> None:
        self.app = app
        self.clients = ClientAddresses(trusted_proxies, header=header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client and self.clients.proxies and self.clients.trusts(str(client[0])):
                _forwarded_scheme(scope)
            self.clients.settle(scope)
        await self.app(scope, receive, send)


def _forwarded_scheme(scope: Scope) -> None:
    proto = (header_text(scope, b"x-forwarded-proto") or "").strip().lower()
    if proto in ("http", "https"):
        scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")


def _chain(name: bytes, values: list[str]) -> list[str]:
    """The addresses of one proxy header, in order (ports and brackets removed)."""
    if name == b"forwarded":
        return [_host(hop) for hop in _forwarded_for(values)]
    return [_host(hop) for value in values for hop in value.split(",") if hop.strip()]


def _forwarded_for(values: list[str]) -> list[str]:
    """The ``for=`` values of RFC 7239 ``Forwarded`` headers, in order."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, found = pair.partition("=")
                if key.strip().lower() == "for":
                    hops.append(found.strip().strip('"'))
    return hops


def _host(hop: str) -> str:
    """``hop`` without its port: ``[::1]:80`` → ``::1``, ``192.0.2.1:80`` → ``192.0.2.1``."""
    hop = hop.strip()
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end > 0 else hop
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
