"""Oversized bodies: refused with 413 before they are read, before authentication, on every
route that takes a body (the login form included), so memory stays bounded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.abuse.plane import Plane
from tests.abuse.rawhttp import declared_but_not_sent, streamed
from tests.abuse.routes import routes_taking_a_body

MB = 1024 * 1024
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
#: How much the server may grow while six 200 MB bodies are thrown at it.
RSS_BOUND = 64 * MB


def test_every_route_answers_413_to_a_declared_200_mb_body_it_was_never_sent(
    plane: Plane,
) -> None:
    routes = routes_taking_a_body()
    assert ("POST", "/login") in routes and ("POST", "/api/v1/flags") in routes

    def ask(route: tuple[str, str]) -> tuple[str, str, int | None]:
        method, path = route
        answer = declared_but_not_sent(plane.port, method, path, length=200 * MB)
        return method, path, answer.status

    with ThreadPoolExecutor(max_workers=len(routes)) as pool:
        answers = list(pool.map(ask, routes))
    wrong = [a for a in answers if a[2] != 413]
    assert not wrong, f"no 413 before the body was read (None: no answer in 15 s): {wrong}"


def test_a_chunked_body_over_the_limit_is_refused_with_413_while_it_streams(
    plane: Plane,
) -> None:
    targets = (("/login", FORM), ("/api/v1/flags", JSON), ("/api/v1/flags/import", JSON))
    for path, headers in targets:
        answer = streamed(plane.port, "POST", path, total=64 * MB, chunked=True, headers=headers)
        assert answer.status == 413, (path, answer.head[:200], answer.sent)
    assert httpx.get(plane.url + "/health").status_code == 200


def test_six_unauthenticated_200_mb_bodies_leave_the_server_memory_bounded(
    plane: Plane,
) -> None:
    before = plane.rss_bytes()
    targets = [("/login", FORM), ("/api/v1/flags", JSON), ("/api/v1/flags/import", JSON)] * 2

    def throw(target: tuple[str, dict[str, str]]) -> int | None:
        path, headers = target
        return streamed(
            plane.port, "POST", path, total=200 * MB, chunked=False, headers=headers
        ).status

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        answers = list(pool.map(throw, targets))
    grown = plane.rss_bytes() - before
    assert answers == [413] * len(targets), (answers, f"grew {grown / MB:.0f} MB")
    assert grown < RSS_BOUND, f"the server grew by {grown / MB:.0f} MB"


def test_huge_headers_query_strings_and_cookies_are_refused_without_a_server_error(
    plane: Plane,
) -> None:
    huge = "a" * 200_000
    attempts = {
        "query": ("/api/v1/audit?target=" + huge, {}),
        "header": ("/api/v1/me", {"X-Padding": huge}),
        "key": ("/api/v1/me", {"X-API-Key": huge[:60_000]}),
        "cookie": ("/", {"Cookie": "safeship_session=" + huge[:60_000]}),
        "path": ("/api/v1/flags/" + huge[:60_000], {}),
    }
    answers = {
        label: declared_but_not_sent(plane.port, "GET", path, length=0, headers=headers).status
        for label, (path, headers) in attempts.items()
    }
    refused = {None, 303, 400, 401, 404, 413, 414, 422, 431}  # None: connection closed
    assert set(answers.values()) <= refused, answers
    assert httpx.get(plane.url + "/health").status_code == 200
