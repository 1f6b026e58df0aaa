"""The Idempotency-Key semantics, each failure mode the peers get wrong, on every store."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Literal, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from safeship.idempotency import IdempotencyConfigError, IdempotencyMiddleware, Store
from safeship.idempotency._http import DOCS_URL
from tests.idempotency.apps import BIG, make_service

PROBLEM = "application/problem+json"


def _key() -> dict[str, str]:
    return {"idempotency-key": f'"{uuid.uuid4()}"'}


def _problem(response: httpx.Response, status: int, name: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["type"] == f"urn:safeship:idempotency:{name}"
    assert body["status"] == status
    # Every problem links its explanation in safeship's docs (the draft's rel="help").
    assert response.headers["link"] == f'<{DOCS_URL}#{name}>; rel="help"'
    return body


async def test_identical_retry_after_success_is_a_replay_not_a_422(store: Store) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        first = await client.post(
            "/orders",
            content=b'{"item": "tea", "qty": 2}',
            headers={**key, "content-type": "application/json"},
        )
        # Same payload, keys in another order and other spacing: the same canonical body.
        again = await client.post(
            "/orders",
            content=b'{"qty":2,"item":"tea"}',
            headers={**key, "content-type": "application/json"},
        )
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"] == "/orders/1"
    assert again.headers["idempotent-replayed"] == "true"
    assert "set-cookie" not in again.headers  # cookies are never replayed
    assert service.runs["orders"] == 1


async def test_a_json_body_no_utf_8_can_encode_is_fingerprinted_not_a_crash(store: Store) -> None:
    service = make_service(store)
    key = _key()
    headers = {**key, "content-type": "application/json"}
    async with service.client() as client:  # (the handler echoes "item", not "note")
        first = await client.post("/orders", content=b'{"note": "\\ud800"}', headers=headers)
        again = await client.post("/orders", content=b'{"note":"\\ud800"}', headers=headers)
        other = await client.post("/orders", content=b'{"note": "\\udfff"}', headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    _problem(other, 422, "key-reused")
    assert service.runs["orders"] == 1


async def test_a_different_payload_under_the_same_key_is_422_not_the_first_response(
    store: Store,
) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        first = await client.post("/orders", json={"item": "tea"}, headers=key)
        other = await client.post("/orders", json={"item": "coffee"}, headers=key)
        other_route = await client.post("/validate", json={"item": "tea"}, headers=key)
    assert first.status_code == 201
    _problem(other, 422, "key-reused")
    _problem(other_route, 422, "key-reused")
    assert "tea" not in other.text
    assert service.runs["orders"] == 1 and service.runs["validate"] == 0


async def test_a_required_key_missing_or_malformed_is_400(store: Store) -> None:
    service = make_service(store)
    async with service.client() as client:
        missing = await client.post("/orders", json={"item": "tea"})
        empty = await client.post("/orders", json={}, headers={"idempotency-key": '""'})
        long = await client.post("/orders", json={}, headers={"idempotency-key": "k" * 300})
        optional = await client.post("/optional")
        plain = await client.post("/plain", headers=_key())
    _problem(missing, 400, "key-missing")
    _problem(empty, 400, "key-invalid")
    _problem(long, 400, "key-invalid")
    assert optional.status_code == plain.status_code == 200
    assert service.runs["orders"] == 0


async def test_a_retry_while_the_first_runs_gets_409_with_retry_after(store: Store) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        first = asyncio.create_task(client.post("/slow-held", headers=key))
        await asyncio.wait_for(service.entered.wait(), 10)
        during = await client.post("/slow-held", headers=key)
        service.gate.set()
        done = await first
        after = await client.post("/slow-held", headers=key)
    _problem(during, 409, "in-flight")
    assert int(during.headers["retry-after"]) >= 1
    assert done.status_code == after.status_code == 200 and after.content == done.content
    assert service.runs["slow"] == 1


async def test_a_long_request_renews_its_lease_and_is_never_declared_unknown(store: Store) -> None:
    service = make_service(store)  # /slow has a 0.3 s lease, renewed every 0.1 s
    key = _key()
    async with service.client() as client:
        first = asyncio.create_task(client.post("/slow", headers=key))
        await asyncio.wait_for(service.entered.wait(), 10)
        answers = []
        for _ in range(4):  # four lease lengths while it runs
            await asyncio.sleep(0.3)
            answers.append((await client.post("/slow", headers=key)).json()["type"])
        service.gate.set()
        assert (await first).status_code == 200
    assert answers == ["urn:safeship:idempotency:in-flight"] * 4
    assert service.runs["slow"] == 1


async def test_after_the_handler_raised_the_outcome_is_unknown_and_it_never_runs_again(
    store: Store,
) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        first = await client.post("/boom", headers=key)
        retries = [await client.post("/boom", headers=key) for _ in range(3)]
    assert first.status_code == 500
    for retry in retries:  # an explicit answer at once: no Retry-After, no day-long wait
        body = _problem(retry, 409, "outcome-unknown")
        assert "retry-after" not in retry.headers
        assert "new key" in str(body["detail"])
    assert service.runs["boom"] == 1


async def test_an_unknown_outcome_is_released_after_unknown_ttl_not_after_a_day(
    store: Store,
) -> None:
    service = make_service(store)  # /boom-briefly: unknown_ttl=0.5, ttl a day
    key = _key()
    loop = asyncio.get_running_loop()
    async with service.client() as client:
        assert (await client.post("/boom-briefly", headers=key)).status_code == 500
        told = _problem(await client.post("/boom-briefly", headers=key), 409, "outcome-unknown")
        assert "0.5 s" in str(told["detail"])
        start, answer = loop.time(), None
        while loop.time() - start < 10:  # the store's clock decides; poll its answer
            answer = await client.post("/boom-briefly", headers=key)
            if answer.status_code != 409:
                break
            _problem(answer, 409, "outcome-unknown")  # never anything else meanwhile
            await asyncio.sleep(0.05)
    assert answer is not None and answer.status_code == 500  # the released key ran again
    assert service.runs["boom-briefly"] == 2


async def test_a_reconcile_hook_decides_an_unknown_outcome(store: Store) -> None:
    service = make_service(store)
    key_rerun, key_found = _key(), _key()
    async with service.client() as client:
        assert (await client.post("/reconciled", headers=key_rerun)).status_code == 500
        # The hook says nothing happened: it runs again, once, and is then replayed.
        rerun = await client.post("/reconciled", headers=key_rerun)
        replay = await client.post("/reconciled", headers=key_rerun)
        assert rerun.json() == {"run": 2} and replay.content == rerun.content
        # The hook finds the outcome: that is stored and replayed, the handler not run.
        service.runs["reconciled"] = 0
        service.reconcile_answer.append(JSONResponse({"found": "order 9"}, status_code=201))
        assert (await client.post("/reconciled", headers=key_found)).status_code == 500
        found = await client.post("/reconciled", headers=key_found)
        found_again = await client.post("/reconciled", headers=key_found)
    assert found.status_code == found_again.status_code == 201
    assert found.json() == found_again.json() == {"found": "order 9"}
    assert service.runs["reconciled"] == 1 and service.runs["reconcile"] == 2


async def test_a_streamed_response_is_replayed_whole(store: Store) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        live = await client.post("/stream", headers=key)
        replay = await client.post("/stream", headers=key)
    assert live.content == b"first part, second part, the whole of it"
    assert replay.content == live.content
    assert replay.headers["content-type"].startswith("text/plain")
    assert service.runs["stream"] == 1


async def test_an_8_mb_response_is_sent_whole_and_its_retry_gets_the_location_not_a_rerun(
    store: Store,
) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        live = await client.post("/big", headers=key)
        retry = await client.post("/big", headers=key)
    assert live.status_code == 201 and len(live.content) == BIG
    assert retry.status_code == 201 and retry.content == b""
    assert retry.headers["location"] == "/exports/1"
    assert service.runs["big"] == 1


async def test_the_same_key_from_another_caller_never_sees_the_first_callers_response(
    store: Store,
) -> None:
    service = make_service(store)
    key = _key()
    async with service.client("alice") as alice, service.client("bob") as bob:
        a = await alice.post("/orders", json={"item": "tea"}, headers=key)
        b = await bob.post("/orders", json={"item": "tea"}, headers=key)
        a_again = await alice.post("/orders", json={"item": "tea"}, headers=key)
    assert a.json()["caller"] == "alice" and b.json()["caller"] == "bob"
    assert a_again.content == a.content
    assert service.runs["orders"] == 2


async def test_an_unauthenticated_caller_is_refused_on_idempotent_routes(store: Store) -> None:
    service = make_service(store)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        response = await anonymous.post("/orders", json={"item": "tea"}, headers=_key())
    _problem(response, 401, "caller-unknown")
    assert service.runs["orders"] == 0


def test_the_middleware_refuses_to_start_without_a_principal() -> None:
    with pytest.raises(IdempotencyConfigError, match="principal"):
        IdempotencyMiddleware(FastAPI(), store=object(), principal=None)  # type: ignore[arg-type]


async def test_validation_failures_are_not_stored_so_the_fixed_request_runs(store: Store) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        refused = await client.post("/validate", json={"note": "x"}, headers=key)
        # The corrected request under the same key is a new payload for a released key.
        fixed = await client.post("/validate", json={"amount": 5}, headers=key)
        replay = await client.post("/validate", json={"amount": 5}, headers=key)
    assert refused.status_code == 422 and fixed.status_code == 200
    assert replay.content == fixed.content and replay.headers["idempotent-replayed"] == "true"
    assert service.runs["validate"] == 2


async def test_server_errors_are_stored_only_when_the_route_says_so(store: Store) -> None:
    service = make_service(store)
    key, key_stored = _key(), _key()
    async with service.client() as client:
        for _ in range(2):
            assert (await client.post("/fail", headers=key)).status_code == 503
            assert (await client.post("/fail-stored", headers=key_stored)).status_code == 500
    assert service.runs["fail"] == 2  # not stored: the retry ran
    assert service.runs["fail-stored"] == 1  # stored: replayed


async def test_a_body_over_the_cap_is_refused_before_anything_is_claimed(store: Store) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        huge = await client.post("/orders", content=b"x" * (1024 * 1024 + 1), headers=key)
        ok = await client.post("/orders", json={"item": "tea"}, headers=key)
    _problem(huge, 413, "body-too-large")
    assert ok.status_code == 201


@pytest.mark.parametrize("count", [100])
async def test_concurrent_identical_requests_with_one_key_run_the_handler_once(
    store: Store, count: int
) -> None:
    service = make_service(store)
    key = _key()
    async with service.client() as client:
        answers = await asyncio.gather(
            *(client.post("/orders", json={"item": "tea"}, headers=key) for _ in range(count))
        )
    statuses = sorted(a.status_code for a in answers)
    assert service.runs["orders"] == 1
    assert set(statuses) <= {201, 409}, statuses
    created = [a for a in answers if a.status_code == 201]
    assert all(a.content == created[0].content for a in created)
    for refused in (a for a in answers if a.status_code == 409):
        assert json.loads(refused.content)["type"] == "urn:safeship:idempotency:in-flight"


async def test_a_202_job_created_under_a_key_returns_the_same_job_id(store: Store) -> None:
    from fastapi.responses import JSONResponse as Json

    from safeship.idempotency import IdempotencyMiddleware as Middleware
    from safeship.idempotency import idempotent, principal_from_header

    app, jobs = FastAPI(), []

    @app.post("/exports")
    @idempotent()
    async def start_export() -> Json:
        jobs.append(str(uuid.uuid4()))
        return Json({"job": jobs[-1]}, status_code=202, headers={"location": f"/jobs/{jobs[-1]}"})

    app.add_middleware(Middleware, store=store, principal=principal_from_header("x-api-key"))
    transport = httpx.ASGITransport(app=app)
    headers = {"x-api-key": "alice", **_key()}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.post("/exports", headers=headers)
        again = await client.post("/exports", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() == {"job": jobs[0]} and len(jobs) == 1
    assert again.headers["location"] == f"/jobs/{jobs[0]}"


@pytest.mark.parametrize("on_store_error", ["closed", "open"])
async def test_with_the_store_down_nothing_runs_unless_told_to_fail_open(
    on_store_error: Literal["closed", "open"],
) -> None:
    import redis.asyncio

    from safeship.idempotency import RedisStore, idempotent, principal_from_header

    dead = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    app, runs = FastAPI(), []

    @app.post("/pay")
    @idempotent()
    async def pay() -> dict[str, bool]:
        runs.append(1)
        return {"paid": True}

    store = RedisStore(dead)
    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        principal=principal_from_header("x-api-key"),
        on_store_error=on_store_error,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post("/pay", headers={"x-api-key": "a", **_key()})
    await store.aclose()
    await dead.aclose()
    if on_store_error == "closed":
        _problem(answer, 503, "store-unavailable")
        assert answer.headers["retry-after"] == "1" and runs == []
    else:
        assert answer.status_code == 200 and runs == [1]


async def test_default_options_cover_every_unmarked_unsafe_route(store: Store) -> None:
    from safeship.idempotency import RouteOptions

    service = make_service(store, default=RouteOptions())
    key = _key()
    async with service.client() as client:
        missing = await client.post("/plain")
        first = await client.post("/plain", headers=key)
        again = await client.post("/plain", headers=key)
    _problem(missing, 400, "key-missing")
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert service.runs["plain"] == 1


async def test_starlettes_authenticated_user_scopes_keys_and_anonymous_is_refused(
    store: Store,
) -> None:
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        SimpleUser,
    )
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection

    from safeship.idempotency import idempotent, principal_from_user

    class HeaderUser(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            name = conn.headers.get("x-user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None

    app, runs = FastAPI(), []

    @app.post("/notes")
    @idempotent()
    async def note() -> dict[str, int]:
        runs.append(1)
        return {"n": len(runs)}

    app.add_middleware(IdempotencyMiddleware, store=store, principal=principal_from_user)
    app.add_middleware(AuthenticationMiddleware, backend=HeaderUser())
    key = _key()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ann = await client.post("/notes", headers={"x-user": "ann", **key})
        ann_again = await client.post("/notes", headers={"x-user": "ann", **key})
        bob = await client.post("/notes", headers={"x-user": "bob", **key})
        nobody = await client.post("/notes", headers=key)
    assert ann.json() == ann_again.json() == {"n": 1} and bob.json() == {"n": 2}
    _problem(nobody, 401, "caller-unknown")


@pytest.mark.parametrize("help_url", ["https://api.example.com/errors/idempotency", None])
async def test_the_help_link_of_problems_is_configurable_or_off(
    store: Store, help_url: str | None
) -> None:
    from safeship.idempotency import idempotent, principal_from_header

    app = FastAPI()

    @app.post("/pay")
    @idempotent()
    async def pay() -> dict[str, int]:
        return {"paid": 1}

    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        principal=principal_from_header("x-api-key"),
        help_url=help_url,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        missing = await client.post("/pay", headers={"x-api-key": "a"})
        done = await client.post("/pay", headers={"x-api-key": "a", **_key()})
    assert missing.status_code == 400
    if help_url is None:
        assert "link" not in missing.headers
    else:
        assert missing.headers["link"] == f'<{help_url}#key-missing>; rel="help"'
    assert done.status_code == 200 and "link" not in done.headers  # only problems link help


@pytest.mark.parametrize(
    "bad",
    [
        "/docs/idempotency.md",  # relative: it would resolve against the API's own host
        "https://example.com/a b",
        'https://example.com/x>; rel="next", <https://evil.example',
        "https://example.com/docs#section",
        "https://example.com/\r\nSet-Cookie: a=b",
        "ftp://example.com/docs",
    ],
)
def test_a_help_url_unfit_for_a_link_header_is_refused(bad: str) -> None:
    from safeship.idempotency import principal_from_header

    with pytest.raises(IdempotencyConfigError, match="help_url"):
        IdempotencyMiddleware(
            FastAPI(), store=cast(Any, object()), principal=principal_from_header("x"), help_url=bad
        )
