"""The express lane of protect(): it sends a request to the app directly exactly when
every guard's own decision passes it, and answers as the layers do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from safeship.observe.health import HealthRegistry
from safeship.web import protect
from safeship.web._asgi import Scope
from safeship.web._express import ExpressLane
from safeship.web._limiter import ALLOWED, MemoryFailureStore, Verdict
from safeship.web._request_id import RequestIdMiddleware
from tests.web.test_hot_paths import read_all

KEY = "ss_right_key"


class RemoteStore:
    """A failure store that is not in memory (as Redis): its counts need I/O."""

    async def check(self, client: str) -> Verdict:
        return ALLOWED

    async def record_failure(self, client: str) -> Verdict:
        return Verdict(False, 60)


STACKS: dict[str, dict[str, Any]] = {
    "everything": {
        "api_keys": [KEY], "health": HealthRegistry(),
        "allowed_origins": ["https://app.example.com"], "max_body_bytes": 10,
    },
    "whole-site-auth-behind-proxy": {
        "api_keys": [KEY], "protected_prefixes": ["/"], "trusted_proxies": ["10.0.0.0/8"],
    },
    "remote-store": {"api_keys": [KEY], "auth_store": RemoteStore()},
    "no-guards": {"metrics_path": None, "max_body_bytes": None},
    "empty-bodies-only": {"api_keys": [KEY], "max_body_bytes": 0},
}  # fmt: skip


def lane_of(app: Any) -> ExpressLane:
    """The express lane inside a stack `protect` built."""
    while not isinstance(app, ExpressLane):
        app = app.app
    return app


def build(stack: str, *, express: bool = True) -> Any:
    """protect()'s stack for ``stack``; without ``express``, every request takes the layers."""
    app = protect(read_all, configure_logs=False, **STACKS[stack])
    if not express:
        lane_of(app).checks = (lambda _scope: False,)
    return app


def guards(app: Any) -> list[Any]:
    """The guard layers between the outer layers and the user's app."""
    layers: list[Any] = []
    layer: Any = lane_of(app).guards
    while layer is not read_all:
        layers.append(layer)
        layer = layer.app
    return layers


values = st.sampled_from([b"", b" ", b"abc", b"r-1", b"x" * 129, b"\xff\xfe", b"1 2"])
BEARERS = [b"Bearer " + KEY.encode(), b"bearer  " + KEY.encode(), b"Bearer ",
           b"Basic " + KEY.encode(), b"Bearer wrong", b""]  # fmt: skip
PATHS = ["/", "/items/1", "/api", "/api/", "/api/x", "/apix", "/admin/stats", "/livez",
         "/readyz", "/metrics", "/metrics/x"]  # fmt: skip
keys = st.sampled_from([KEY.encode(), f" {KEY} ".encode(), b"wrong", b"", b" "])
header = st.one_of(
    st.tuples(st.just(b"x-request-id"), values),
    st.tuples(st.just(b"x-api-key"), keys),
    st.tuples(
        st.just(b"authorization"),
        st.sampled_from(BEARERS),
    ),
    st.tuples(
        st.just(b"content-length"),
        st.sampled_from([b"0", b"5", b"10", b"11", b"-1", b"1_0", b" 7 ", b"x", b""]),
    ),
    st.tuples(st.just(b"transfer-encoding"), st.just(b"chunked")),
    st.tuples(st.just(b"cookie"), st.just(b"s=1")),
    st.tuples(
        st.just(b"origin"),
        st.sampled_from([b"https://app.example.com", b"https://evil.example", b"null"]),
    ),
    st.tuples(st.just(b"sec-fetch-site"), st.sampled_from([b"same-origin", b"cross-site"])),
    st.tuples(st.just(b"host"), st.just(b"shop.example")),
    st.tuples(
        st.sampled_from([b"x-forwarded-for", b"x-real-ip"]),
        st.sampled_from([b"1.2.3.4", b"9.9.9.9, 10.0.0.9", b"10.0.0.9", b"nonsense", b""]),
    ),
    st.tuples(st.just(b"forwarded"), st.sampled_from([b"for=1.2.3.4", b'for="[::1]:80"'])),
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "HEAD", "POST", "DELETE", "OPTIONS"]),
        "path": st.sampled_from(PATHS),
        "headers": st.lists(header, max_size=7),
        "http_version": st.sampled_from(["1.1", "1.0", "2"]),
        "client": st.sampled_from([("1.2.3.4", 5), ("10.0.0.9", 5), None]),
    }
)


def scope_of(request: dict[str, Any]) -> Scope:
    return {"type": "http", "query_string": b"", "root_path": "", **request}


def route(lane: ExpressLane, scope: Scope) -> str:
    """Where the lane sends ``scope``: ``"app"`` or ``"guards"``."""
    taken: list[str] = []

    async def to(where: str, *_: Any) -> None:
        taken.append(where)

    lane.app, lane.guards = (lambda *a: to("app", *a)), (lambda *a: to("guards", *a))
    asyncio.run(lane(scope, read_all, read_all))  # type: ignore[arg-type]
    (where,) = taken
    return where


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=st.sampled_from(sorted(STACKS)), request=requests)
@example(
    stack="everything",
    request={"method": "GET", "path": "/api/x", "headers": [(b"x-api-key", KEY.encode())],
             "http_version": "1.1", "client": ("1.2.3.4", 5)},
)  # fmt: skip
def test_the_lane_admits_exactly_what_every_guard_passes(
    stack: str, request: dict[str, Any]
) -> None:
    app = build(stack)
    layers = guards(app)
    scope = scope_of(request)
    every_guard_passes = all(layer.passes(dict(scope)) for layer in layers)
    where = route(lane_of(app), dict(scope))
    assert where == ("app" if every_guard_passes else "guards")


def test_a_valid_key_goes_straight_to_the_app_and_a_limited_client_does_not() -> None:
    app = build("everything")
    scope = scope_of(
        {"method": "GET", "path": "/api/x", "headers": [(b"x-api-key", KEY.encode())],
         "http_version": "1.1", "client": ("1.2.3.4", 5)}
    )  # fmt: skip
    store = next(layer.store for layer in guards(app) if hasattr(layer, "store"))
    assert isinstance(store, MemoryFailureStore)
    assert route(lane_of(build("everything")), dict(scope)) == "app"
    for _ in range(5):
        asyncio.run(store.record_failure("1.2.3.4"))
    assert route(lane_of(app), dict(scope)) == "guards"  # limited: the auth layer answers 429
    assert route(lane_of(app), {**scope, "client": ("1.2.3.5", 5)}) == "app"


async def run(app: Any, scope: Scope, body: bytes) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    chunks = [body[:3], body[3:]] if body else [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        message = dict(message)
        if message["type"] == "http.response.start":
            # Ids are generated apart; Retry-After counts down between the two runs.
            message["headers"] = [
                (k, b"" if k == b"retry-after" else v)
                for k, v in message.get("headers", [])
                if k != b"x-request-id"
            ]
        sent.append(message)

    await app(scope, receive, send)
    return sent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stack=st.sampled_from(sorted(STACKS)),
    sequence=st.lists(st.tuples(requests, st.sampled_from([b"", b"abc", b"x" * 12])), max_size=8),
)
def test_the_lane_answers_as_the_layers_do(
    stack: str, sequence: list[tuple[dict[str, Any], bytes]]
) -> None:
    fast = build(stack)
    layered = build(stack, express=False)

    async def both() -> None:
        for request, body in sequence:
            answers = [await run(app, scope_of(request), body) for app in (fast, layered)]
            if request["path"] == "/metrics":  # the two stacks count differently
                answers = [[m["type"] for m in answer] for answer in answers]
            assert answers[0] == answers[1]

    asyncio.run(both())


@pytest.mark.parametrize("incoming", [b"r-1", b"", b"bad id", b"x" * 129])
def test_assign_keeps_a_valid_id_and_generates_the_rest(incoming: bytes) -> None:
    scope: Scope = {"type": "http", "headers": [(b"x-request-id", incoming)]}
    rid, encoded = RequestIdMiddleware(read_all).assign(scope)
    assert scope["state"]["request_id"] == rid and encoded == rid.encode()
    if incoming == b"r-1":
        assert rid == "r-1"
    else:
        assert len(rid) == 32 and rid.isalnum() and rid.isascii()
    own = RequestIdMiddleware(read_all, generator=lambda: "own-1")
    expected = "r-1" if incoming == b"r-1" else "own-1"
    assert own.assign({"headers": [(b"x-request-id", incoming)]})[0] == expected
