"""One reading of a presented API key: `presented_key`, used by the `protect()` guard
and by the control plane alike, so a key one of them accepts the other accepts too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.db import create_engine
from safeship.server import create_app
from safeship.web import protect
from safeship.web._keys import presented_key
from tests.server.support import READ_KEY, make_settings

KEY = READ_KEY.encode()
PRESENTATIONS: list[tuple[list[tuple[bytes, bytes]], str | None]] = [
    ([(b"x-api-key", KEY)], READ_KEY),
    ([(b"x-api-key", b"  " + KEY + b" ")], READ_KEY),
    ([(b"authorization", b"Bearer " + KEY)], READ_KEY),
    ([(b"authorization", b"bearer   " + KEY)], READ_KEY),  # case and spaces of the scheme
    ([(b"x-api-key", b""), (b"authorization", b"Bearer " + KEY)], READ_KEY),
    ([(b"authorization", b"Bearer " + KEY), (b"x-api-key", b"wrong")], "wrong"),
    ([(b"x-api-key", b"wrong"), (b"x-api-key", KEY)], "wrong"),  # the first counts
    ([(b"authorization", b"Bearer " + KEY), (b"authorization", b"Bearer no")], READ_KEY),
    ([(b"authorization", b"Basic " + KEY)], None),
    ([(b"authorization", b"Bearer ")], None),
    ([(b"authorization", b"Bearer" + KEY)], None),
    ([], None),
]


@pytest.mark.parametrize(("headers", "expected"), PRESENTATIONS)
def test_presented_key_reads_one_key_per_request(
    headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert presented_key(headers) == expected


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    try:
        with TestClient(create_app(make_settings(url), engine=engine)) as client:
            yield client
    finally:
        engine.dispose()


@pytest.mark.parametrize(("headers", "expected"), PRESENTATIONS)
async def test_the_control_plane_and_the_guard_accept_the_same_keys(
    plane: TestClient, headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    accepted = expected == READ_KEY
    to_plane = plane.build_request("GET", "/api/v1/me")
    to_plane.headers = to_plane.headers.__class__(headers)  # as sent: repeats stay apart
    answer = plane.send(to_plane)
    assert answer.status_code == (200 if accepted else 401)

    async def ok(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = protect(Starlette(routes=[Route("/api/x", ok)]), api_keys=[READ_KEY],
                  configure_logs=False)  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        request = client.build_request("GET", "/api/x")
        request.headers = httpx.Headers(headers)
        assert (await client.send(request)).status_code == (200 if accepted else 401)
