"""CSRF origin checks, body size limit and request timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.web import BodySizeLimitMiddleware, OriginCheckMiddleware, TimeoutMiddleware, protect


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return PlainTextResponse("late")


async def own_timeout(_request: Request) -> PlainTextResponse:
    raise TimeoutError("database timed out")


def inner() -> Starlette:
    return Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/slow", slow),
            Route("/own-timeout", own_timeout),
        ]
    )


def client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="https://shop.example")


# -- CSRF ------------------------------------------------------------------------------

CSRF_CASES = [
    # (method, headers, expected status)
    ("POST", {"Cookie": "s=1", "Origin": "https://evil.example"}, 403),
    ("POST", {"Cookie": "s=1", "Sec-Fetch-Site": "cross-site"}, 403),
    ("POST", {"Cookie": "s=1", "Sec-Fetch-Site": "same-site"}, 403),
    ("POST", {"Cookie": "s=1", "Origin": "null"}, 403),
    ("DELETE", {"Cookie": "s=1", "Origin": "https://evil.example"}, 403),
    ("POST", {"Cookie": "s=1", "Sec-Fetch-Site": "same-origin"}, 200),
    ("POST", {"Cookie": "s=1", "Sec-Fetch-Site": "none"}, 200),
    ("POST", {"Cookie": "s=1", "Origin": "https://shop.example"}, 200),
    ("POST", {"Cookie": "s=1", "Origin": "https://admin.example"}, 200),
    ("POST", {"Cookie": "s=1", "Origin": "HTTPS://ADMIN.EXAMPLE/"}, 200),
    (
        "POST",
        {"Cookie": "s=1", "Origin": "https://admin.example", "Sec-Fetch-Site": "cross-site"},
        200,
    ),
    ("POST", {"Origin": "https://evil.example"}, 200),  # no cookie: not a CSRF vector
    ("POST", {"Cookie": "s=1"}, 200),  # non-browser client
    ("GET", {"Cookie": "s=1", "Origin": "https://evil.example"}, 200),  # safe method
]


@pytest.mark.parametrize(("method", "headers", "expected"), CSRF_CASES)
async def test_origin_check(method: str, headers: dict[str, str], expected: int) -> None:
    app = OriginCheckMiddleware(inner(), allowed_origins=["https://admin.example"])
    async with client(app) as c:
        response = await c.request(method, "/echo", headers=headers)
    assert response.status_code == expected
    if expected == 403:
        assert response.headers["content-type"] == "application/problem+json"


async def test_require_origin_refuses_headerless_cookie_requests() -> None:
    app = OriginCheckMiddleware(inner(), require_origin=True)
    async with client(app) as c:
        assert (await c.post("/echo", headers={"Cookie": "s=1"})).status_code == 403


def test_bad_allowed_origin_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="scheme and host"):
        OriginCheckMiddleware(inner(), allowed_origins=["admin.example"])
    with pytest.raises(ValueError, match="scheme and host"):
        OriginCheckMiddleware(inner(), allowed_origins=["https://admin.example/path"])


# -- body size -------------------------------------------------------------------------


async def test_declared_large_body_is_refused_before_the_app() -> None:
    async with client(BodySizeLimitMiddleware(inner(), max_body_bytes=10)) as c:
        assert (await c.post("/echo", content=b"x" * 10)).text == "10"
        response = await c.post("/echo", content=b"x" * 11)
    assert response.status_code == 413


async def test_streamed_body_is_cut_at_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 100

    async with client(BodySizeLimitMiddleware(inner(), max_body_bytes=250)) as c:
        response = await c.post("/echo", content=chunks())
    assert response.status_code == 413


async def test_streamed_body_under_limit_passes() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(2):
            yield b"x" * 100

    async with client(BodySizeLimitMiddleware(inner(), max_body_bytes=250)) as c:
        assert (await c.post("/echo", content=chunks())).text == "200"


# -- timeout ---------------------------------------------------------------------------


async def test_slow_request_gets_504() -> None:
    async with client(TimeoutMiddleware(inner(), timeout=0.05)) as c:
        response = await c.get("/slow?s=5")
    assert response.status_code == 504


async def test_fast_request_is_untouched() -> None:
    async with client(TimeoutMiddleware(inner(), timeout=1.0)) as c:
        assert (await c.get("/slow?s=0")).text == "late"


async def test_apps_own_timeout_error_is_not_reported_as_504() -> None:
    async with client(TimeoutMiddleware(inner(), timeout=5.0)) as c:
        assert (await c.get("/own-timeout")).status_code == 500


async def test_protect_wires_limits() -> None:
    app = protect(inner(), max_body_bytes=5, request_timeout=0.05, configure_logs=False)
    async with client(app) as c:
        assert (await c.post("/echo", content=b"123456")).status_code == 413
        assert (await c.get("/slow?s=5")).status_code == 504


def test_bad_limits_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        BodySizeLimitMiddleware(inner(), max_body_bytes=-1)
    with pytest.raises(ValueError, match="timeout"):
        TimeoutMiddleware(inner(), timeout=0)
