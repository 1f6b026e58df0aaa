"""The protect() stack on a Starlette and a FastAPI app."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from safeship.observe._logging import request_id
from safeship.observe.health import HEALTH_MEDIA_TYPE, HealthRegistry
from safeship.web import protect


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], "rid": request_id.get()})


def starlette_app() -> Starlette:
    inner = Starlette(routes=[Route("/things/{thing_id}", item_thing)])
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/admin/stats", lambda r: PlainTextResponse("stats")),
            Mount("/sub", app=inner),
        ]
    )


async def item_thing(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["thing_id"])


def client(app: object, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 1234))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def requests_total(route: str, status: str, method: str = "GET") -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("safeship_http_requests_total", labels) or 0.0


async def test_request_id_is_generated_echoed_and_bound() -> None:
    async with client(protect(starlette_app(), configure_logs=False)) as c:
        response = await c.get("/items/1")
        rid = response.headers["x-request-id"]
        assert len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower()
        assert response.json()["rid"] == rid
        kept = await c.get("/items/1", headers={"X-Request-ID": "abc-123"})
        assert kept.headers["x-request-id"] == "abc-123"
        for hostile in ("a\nb", "x" * 200, "a b"):
            bad = await c.get("/items/1", headers={b"X-Request-ID": hostile.encode()})
            assert len(bad.headers["x-request-id"]) == 32
        # Ids are logged as they are: one that looks like PII is replaced at the door.
        for personal in ("4111111111111111", "+44-20-7946-0958", "555-123-4567"):
            replaced = await c.get("/items/1", headers={"X-Request-ID": personal})
            assert replaced.headers["x-request-id"] != personal


async def test_metrics_use_route_templates_not_paths() -> None:
    before = requests_total("/items/{item_id}", "200")
    before_sub = requests_total("/sub/things/{thing_id}", "200")
    before_404 = requests_total("unmatched", "404")
    async with client(protect(starlette_app(), configure_logs=False)) as c:
        for n in range(3):
            await c.get(f"/items/{n}")
        await c.get("/sub/things/9")
        await c.get("/nope/123")
        body = (await c.get("/metrics")).text
    assert requests_total("/items/{item_id}", "200") == before + 3
    assert requests_total("/sub/things/{thing_id}", "200") == before_sub + 1
    assert requests_total("unmatched", "404") == before_404 + 1
    assert "/items/1" not in body
    assert "safeship_http_request_duration_seconds_bucket" in body


async def test_fastapi_route_templates_are_used() -> None:
    api = FastAPI()

    @api.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    before = requests_total("/orders/{order_id}", "200")
    async with client(protect(api, configure_logs=False)) as c:
        assert (await c.get("/orders/5")).json() == {"order_id": 5}
    assert requests_total("/orders/{order_id}", "200") == before + 1


async def test_health_routes_answer_health_json() -> None:
    registry = HealthRegistry()
    registry.add("db", lambda: "ok")
    async with client(protect(starlette_app(), health=registry, configure_logs=False)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.headers["content-type"] == HEALTH_MEDIA_TYPE
        assert json.loads(ready.text)["checks"]["db"][0]["status"] == "pass"
        registry.mark_not_ready()
        assert (await c.get("/readyz")).status_code == 503
        assert (await c.get("/livez")).status_code == 200


async def test_api_keys_guard_protected_prefixes_only() -> None:
    app = protect(
        starlette_app(), api_keys=["ss_good"], protected_prefixes=["/admin"], configure_logs=False
    )
    async with client(app) as c:
        assert (await c.get("/items/1")).status_code == 200
        assert (await c.get("/admin/stats")).status_code == 401
        assert (await c.get("/admin/stats", headers={"X-API-Key": "ss_bad"})).status_code == 401
        ok = await c.get("/admin/stats", headers={"X-API-Key": "ss_good"})
        assert ok.text == "stats"
        bearer = await c.get("/admin/stats", headers={"Authorization": "Bearer ss_good"})
        assert bearer.status_code == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer ss_bad"), (b"x-api-key", b"ss_good")], 200),
        ([(b"x-api-key", b"ss_good"), (b"authorization", b"Bearer ss_bad")], 200),
        ([(b"x-api-key", b""), (b"authorization", b"Bearer ss_good")], 200),
        ([(b"x-api-key", b"ss_bad"), (b"x-api-key", b"ss_good")], 401),  # the first counts
        ([(b"authorization", b"Bearer ss_good"), (b"authorization", b"Bearer ss_bad")], 200),
        ([(b"authorization", b"Basic ss_good")], 401),
        ([(b"x-api-key", b"  ss_good  ")], 200),
    ],
)
async def test_which_presented_key_counts(
    headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    app = protect(
        starlette_app(), api_keys=["ss_good"], protected_prefixes=["/admin"], configure_logs=False
    )
    async with client(app) as c:
        request = c.build_request("GET", "/admin/stats")
        request.headers = httpx.Headers(headers)
        assert (await c.send(request)).status_code == expected


async def test_only_the_first_request_id_header_counts() -> None:
    async with client(protect(starlette_app(), configure_logs=False)) as c:
        request = c.build_request("GET", "/items/1")
        request.headers = httpx.Headers([(b"x-request-id", b"a b"), (b"x-request-id", b"ok-1")])
        rid = (await c.send(request)).headers["x-request-id"]
        assert rid != "ok-1" and len(rid) == 32  # the first, malformed: a new id
        request.headers = httpx.Headers([(b"x-request-id", b"ok-1"), (b"x-request-id", b"ok-2")])
        assert (await c.send(request)).headers["x-request-id"] == "ok-1"


async def test_access_log_line_has_status_route_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="safeship.access"):
        async with client(protect(starlette_app(), configure_logs=False)) as c:
            await c.get("/items/9")
    (record,) = [r for r in caplog.records if r.name == "safeship.access"]
    event = record.msg
    assert isinstance(event, dict)
    assert event["event"] == "http.request"
    assert event["status"] == 200
    assert event["route"] == "/items/{item_id}"
    assert event["path"] == "/items/9"
    assert event["duration_ms"] >= 0
    assert event["request_id"]


async def test_probe_requests_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    registry = HealthRegistry()
    with caplog.at_level(logging.INFO, logger="safeship.access"):
        async with client(protect(starlette_app(), health=registry, configure_logs=False)) as c:
            await c.get("/livez")
    assert not [r for r in caplog.records if r.name == "safeship.access"]


async def test_auth_failures_are_logged_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = protect(
        starlette_app(), api_keys=["ss_good"], protected_prefixes=["/admin"], configure_logs=False
    )
    with caplog.at_level(logging.INFO):
        async with client(app) as c:
            await c.get("/admin/stats", headers={"X-API-Key": "ss_attempted_secret"})
    failures = [r for r in caplog.records if r.name == "safeship.web.auth"]
    assert failures
    assert all("ss_attempted_secret" not in r.getMessage() for r in caplog.records)
    assert failures[0].msg["reason"] == "invalid"  # type: ignore[index]


async def test_server_error_is_counted_as_500() -> None:
    async def boom(_request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    before = requests_total("/boom", "500")
    app = protect(Starlette(routes=[Route("/boom", boom)]), configure_logs=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/boom")).status_code == 500
    assert requests_total("/boom", "500") == before + 1


def test_protect_validates_settings_at_start_up() -> None:
    with pytest.raises(ValueError, match="protected_prefixes"):
        protect(starlette_app(), api_keys=["k"], protected_prefixes=["admin"], configure_logs=False)
    with pytest.raises(ValueError, match=r"trusted_proxies: 'nope' is not an IP"):
        protect(starlette_app(), api_keys=["k"], trusted_proxies=["nope"], configure_logs=False)
    with pytest.raises(ValueError, match="digests"):
        protect(starlette_app(), api_key_digests=["abc"], configure_logs=False)


def _both_forms() -> list[object]:
    """protect()'s app, and the same layers without the shortcut past them."""
    from safeship.web._express import ExpressLane

    def build(express: bool) -> object:
        app = protect(
            starlette_app(),
            api_keys=["ss_right_key"],
            health=HealthRegistry(),
            allowed_origins=["https://app.example.com"],
            max_body_bytes=10,
            configure_logs=False,
        )
        lane: Any = app
        while not isinstance(lane, ExpressLane):
            lane = lane.app
        if not express:
            lane.checks = (lambda _scope: False,)  # every request: the layers
        return app

    return [build(True), build(False)]


REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/items/1", {}, None),
    ("GET", "/livez", {}, None),
    ("HEAD", "/readyz", {}, None),
    ("POST", "/livez", {}, None),
    ("GET", "/metrics", {}, None),
    ("GET", "/admin/stats", {}, None),
    ("GET", "/admin/stats", {"X-API-Key": "ss_right_key"}, None),
    ("OPTIONS", "/admin/stats", {}, None),
    ("POST", "/items/1", {"Content-Length": "11"}, b"x" * 11),
    ("POST", "/items/1", {"Cookie": "s=1", "Origin": "https://evil.example"}, b"x"),
    ("POST", "/items/1", {"Cookie": "s=1", "Origin": "https://app.example.com"}, b"x"),
    *[("GET", "/admin/stats", {"X-API-Key": f"wrong-{n}"}, None) for n in range(7)],
    ("GET", "/admin/stats", {"X-API-Key": "ss_right_key"}, None),  # now limited: 429
]


async def test_the_shortcut_past_the_layers_answers_as_the_layers_do() -> None:
    answers = []
    for app in _both_forms():
        seen = []
        async with client(app) as c:
            for method, path, headers, body in REQUESTS:
                sent = {"X-Request-ID": "r-1", **headers}
                response = await c.request(method, path, headers=sent, content=body)
                kept = {
                    k: v
                    for k, v in response.headers.items()
                    if k not in ("x-request-id", "content-length")
                }
                text = "" if path == "/metrics" else response.text
                seen.append((method, path, response.status_code, kept, text))
        answers.append(seen)
    assert answers[0] == answers[1]
    statuses = [status for _, _, status, _, _ in answers[0]]
    # probes answer; POST /livez and the good-origin POST reach the app (404/405)
    assert statuses[:11] == [200, 200, 200, 404, 200, 401, 200, 405, 413, 403, 405]
    assert statuses[11:] == [401] * 5 + [429] * 3  # limited after 5 failures, even the right key
