"""Client addresses: proxy headers count only from trusted proxies, whatever the server did."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.errors import SafeshipError
from safeship.observe._logging import configure_logging
from safeship.web import protect
from safeship.web._asgi import Scope
from safeship.web._clients import ClientAddresses, ClientAddressMiddleware, TrustedProxyError

PEER = ("192.0.2.10", 4711)


def scope_with(client: tuple[str, int] | None, *headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "client": client, "headers": list(headers)}


XFF, FWD, REAL = b"x-forwarded-for", b"forwarded", b"x-real-ip"


@pytest.mark.parametrize(
    ("trusted", "client", "headers", "expected"),
    [
        # No trusted proxy: the peer, whatever it sends.
        ((), PEER, [(XFF, b"1.1.1.1")], "192.0.2.10"),
        ((), PEER, [(FWD, b"for=1.1.1.1")], "192.0.2.10"),
        ((), PEER, [(REAL, b"1.1.1.1")], "192.0.2.10"),
        # An untrusted peer behind a trusted list: still the peer.
        (("10.0.0.0/8",), PEER, [(XFF, b"1.1.1.1")], "192.0.2.10"),
        # A trusted peer: the right-most hop that is no trusted proxy.
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(XFF, b"6.6.6.6, 1.1.1.1, 10.0.0.3")], "1.1.1.1"),
        # Every header line of the chain counts, in order (not only the first line).
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(XFF, b"6.6.6.6"), (XFF, b"1.1.1.1")], "1.1.1.1"),
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(XFF, b"1.1.1.1:8080")], "1.1.1.1"),
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(XFF, b"10.0.0.4, 10.0.0.3")], "10.0.0.4"),
        # A hop that is no IP: the trusted proxy itself stands for the client.
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(XFF, b"1.1.1.1, junk")], "10.0.0.2"),
        (("10.0.0.0/8",), ("10.0.0.2", 1), [], "10.0.0.2"),
        # A dual-stack socket shows an IPv4 proxy as an IPv4-mapped IPv6 address.
        (("10.0.0.0/8",), ("::ffff:10.0.0.2", 1), [(XFF, b"1.1.1.1")], "1.1.1.1"),
        # Only the configured header (X-Forwarded-For) counts: the others can be passed
        # through a proxy untouched.
        (("10.0.0.0/8",), ("10.0.0.2", 1), [(FWD, b"for=6.6.6.6"), (REAL, b"6.6.6.7")], "10.0.0.2"),
        # The server already replaced the peer with a forwarded address (uvicorn does
        # for 127.0.0.1 by default): with no trusted proxy the client is unknown.
        ((), ("6.6.6.6", 0), [(XFF, b"6.6.6.6")], "unknown"),
        ((), ("6.6.6.6", 0), [(REAL, b"6.6.6.6")], "unknown"),
        ((), ("::1", 0), [(FWD, b'for="[::1]:80"')], "unknown"),
        # ...and with trusted proxies, the chain read as if the lost peer were one.
        (("127.0.0.1",), ("1.1.1.1", 0), [(XFF, b"6.6.6.6, 1.1.1.1")], "1.1.1.1"),
        # A direct client naming itself in the chain gains nothing.
        (("10.0.0.0/8",), PEER, [(XFF, b"6.6.6.6, 192.0.2.10")], "192.0.2.10"),
        (("10.0.0.0/8",), PEER, [(XFF, b"192.0.2.10, 6.6.6.6")], "unknown"),
        ((), None, [(XFF, b"6.6.6.6")], "unknown"),
    ],
)
def test_the_client_is_the_peer_unless_a_trusted_proxy_forwarded_it(
    trusted: tuple[str, ...],
    client: tuple[str, int] | None,
    headers: list[tuple[bytes, bytes]],
    expected: str,
) -> None:
    addresses = ClientAddresses(trusted)
    scope = scope_with(client, *headers)
    assert addresses.address(scope) == expected
    assert addresses.settle(scope) == expected
    settled = scope["client"]
    assert (settled[0] if settled else "unknown") == expected
    assert addresses.settle(scope) == expected  # settling again changes nothing
    assert scope["client"] == settled


@pytest.mark.parametrize(
    ("header", "headers", "expected"),
    [
        ("forwarded", [(FWD, b'for=6.6.6.6;proto=https, for="1.1.1.1:443"')], "1.1.1.1"),
        ("forwarded", [(FWD, b'For="[2001:db8::7]:443"')], "2001:db8::7"),
        ("forwarded", [(XFF, b"6.6.6.6")], "10.0.0.2"),
        ("x-real-ip", [(REAL, b"1.1.1.1")], "1.1.1.1"),
        ("x-real-ip", [(XFF, b"6.6.6.6")], "10.0.0.2"),
    ],
)
def test_the_operator_chooses_the_one_proxy_header_to_read(
    header: Any, headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    addresses = ClientAddresses(["10.0.0.0/8"], header=header)
    assert addresses.address(scope_with(("10.0.0.2", 1), *headers)) == expected


def test_bad_settings_fail_at_construction_naming_the_value() -> None:
    with pytest.raises(TrustedProxyError, match=r"'10\.0\.0\.0/33' is not an IP") as caught:
        ClientAddresses(["10.0.0.0/33"])
    assert isinstance(caught.value, SafeshipError) and isinstance(caught.value, ValueError)
    with pytest.raises(TrustedProxyError, match="must be one of x-forwarded-for"):
        ClientAddresses([], header="x-client-ip")  # type: ignore[arg-type]


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.client.host if request.client else "none")


def served(app: Any, client: tuple[str, int]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def stack(**options: Any) -> Any:
    inner = Starlette(routes=[Route("/admin", whoami), Route("/whoami", whoami)])
    return protect(
        inner, api_keys=["ss_good"], protected_prefixes=["/admin"], configure_logs=False, **options
    )


async def test_rotating_the_header_from_an_untrusted_peer_does_not_evade_the_limit() -> None:
    app = stack()
    async with served(app, ("203.0.113.5", 1)) as attacker:
        statuses = []
        for n in range(12):
            headers = {
                "X-API-Key": f"guess{n}",
                "X-Forwarded-For": f"198.51.100.{n}",
                "Forwarded": f"for=198.51.101.{n}",
                "X-Real-IP": f"198.51.102.{n}",
            }
            statuses.append((await attacker.get("/admin", headers=headers)).status_code)
    assert statuses == [401] * 5 + [429] * 7


async def test_a_server_rewritten_peer_cannot_lock_out_the_address_it_names() -> None:
    app = stack()
    # As uvicorn by default hands a request from 127.0.0.1 that names a victim.
    async with served(app, ("198.51.100.9", 0)) as spoofed:
        for n in range(25):
            headers = {"X-API-Key": f"guess{n}", "X-Forwarded-For": "198.51.100.9"}
            await spoofed.get("/admin", headers=headers)
        limited = await spoofed.get(
            "/admin", headers={"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.9"}
        )
    async with served(app, ("198.51.100.9", 40000)) as victim:
        response = await victim.get("/admin", headers={"X-API-Key": "ss_good"})
    assert limited.status_code == 429
    assert (response.status_code, response.text) == (200, "198.51.100.9")


async def test_a_trusted_proxy_forwards_each_client_its_own_count() -> None:
    app = stack(trusted_proxies=["10.0.0.0/8"])
    async with served(app, ("10.0.0.2", 1)) as proxy:
        for n in range(6):
            headers = {"X-API-Key": f"guess{n}", "X-Forwarded-For": "198.51.100.7"}
            await proxy.get("/admin", headers=headers)
        other = await proxy.get(
            "/admin", headers={"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.8"}
        )
        same = await proxy.get(
            "/admin", headers={"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.7"}
        )
    assert (other.status_code, other.text) == (200, "198.51.100.8")
    assert same.status_code == 429


@pytest.mark.usefixtures("restore_logging")
async def test_the_access_log_names_the_settled_client() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)
    for trusted, expected in (((), "10.0.0.2"), (("10.0.0.0/8",), "198.51.100.8")):
        app = stack(trusted_proxies=trusted)
        async with served(app, ("10.0.0.2", 1)) as proxy:
            answer = await proxy.get("/whoami", headers={"X-Forwarded-For": "198.51.100.8"})
        assert answer.text == expected
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    clients = [line["client"] for line in lines if line.get("event") == "http.request"]
    assert clients == ["10.0.0.2", "198.51.100.8"]


async def test_the_middleware_alone_settles_client_and_scheme_from_a_trusted_proxy() -> None:
    app = ClientAddressMiddleware(
        Starlette(
            routes=[Route("/", lambda r: PlainTextResponse(f"{r.client.host} {r.url.scheme}"))]
        ),
        trusted_proxies=["10.0.0.0/8"],
    )
    headers = {"X-Forwarded-For": "198.51.100.8", "X-Forwarded-Proto": "https"}
    async with served(app, ("10.0.0.2", 1)) as proxy:
        assert (await proxy.get("/", headers=headers)).text == "198.51.100.8 https"
    async with served(app, ("203.0.113.5", 1)) as direct:
        assert (await direct.get("/", headers=headers)).text == "203.0.113.5 http"


hops = st.sampled_from(["1.1.1.1", "6.6.6.6", "10.0.0.3", "192.0.2.10", "::1", "junk", ""])
proxy_headers = st.lists(
    st.tuples(
        st.sampled_from([XFF, FWD, REAL]),
        st.lists(hops, min_size=1, max_size=3).map(lambda h: ", ".join(h).encode()),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    trusted=st.sampled_from([(), ("10.0.0.0/8",), ("10.0.0.0/8", "::1")]),
    peer=st.sampled_from(["192.0.2.10", "10.0.0.2", "6.6.6.6"]),
    headers=proxy_headers,
)
def test_headers_never_choose_the_client_of_an_untrusted_peer(
    trusted: tuple[str, ...], peer: str, headers: list[tuple[bytes, bytes]]
) -> None:
    addresses = ClientAddresses(trusted)
    scope = scope_with((peer, 4711), *headers)
    found = addresses.settle(scope)
    if not addresses.trusts(peer):
        # The peer itself, or "unknown" when it looks rewritten: never an address it names.
        assert found in (peer, "unknown")
    settled = scope["client"]
    assert addresses.settle(scope) == found  # idempotent
    assert scope["client"] == settled
