"""schemathesis over the control plane's whole OpenAPI schema, on SQLite and PostgreSQL.

With the admin key: no 5xx, and every 422 is the documented body (docs/control-plane.md)
and matches the 422 the schema documents. With the read key: no 5xx and never a 2xx on a
write. Without a valid key: never a 2xx on a protected route.

Each operation's request strategy comes from schemathesis and runs under hypothesis here,
so the fuzzing does not depend on schemathesis's pytest plugin.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance, status_code_conformance

from safeship.server import create_app
from safeship.web._limiter import LimitPolicy, MemoryFailureStore
from tests.server.support import ADMIN_KEY, READ_KEY, make_settings

OPEN_PATHS = {"/health", "/health/ready", "/metrics"}
#: Operations a read key may call although they are not GETs: they change nothing.
READ_ONLY_POSTS = {
    ("POST", "/api/v1/flags/evaluate"),
    # Flag-server routes SDKs call with read keys: evaluations, and their own reports.
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/api/client/register"),
    ("POST", "/api/client/metrics"),
    ("POST", "/api/frontend"),
    ("POST", "/api/frontend/client/register"),
    ("POST", "/api/frontend/client/metrics"),
}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
#: What a request without a valid key may get: refused for its key, or for its shape
#: (unparseable, too large, wrong media type) before the key is looked at; never 403, 404
#: or 409, which would mean the route ran.
REFUSED_BEFORE_AUTH = {400, 401, 413, 415, 422}
FUZZ = settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
Check = Callable[[schemathesis.Case, int, str], None]


@pytest.fixture
def plane_app(database_url: str, engine: sa.Engine) -> FastAPI:
    app = create_app(make_settings(database_url), engine=engine)
    # Fuzzing sends thousands of bad keys: lift the brute-force limit so every request
    # reaches the authentication check instead of stopping at 429.
    unlimited = LimitPolicy(max_per_window=10**9, block_after=10**9)
    app.state.plane.auth_failures = MemoryFailureStore(policy=unlimited)
    return app


def operations(app: FastAPI) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 30, "the schema should list every control-plane route"
    return found


def is_write(case: schemathesis.Case) -> bool:
    return (
        case.method.upper() not in SAFE_METHODS
        and (
            case.method.upper(),
            case.path,
        )
        not in READ_ONLY_POSTS
    )


def _call(case: schemathesis.Case, key: str) -> schemathesis.Response:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    headers["X-API-Key"] = key
    case.headers = headers
    return case.call()


def documented_invalid(case: schemathesis.Case, response: object, text: str) -> None:
    """A 422 is ``{"error": "invalid", "detail": [{"field", "problem"}, ...]}``, and the
    schema's own 422 response describes it."""
    import json

    body = json.loads(text)
    where = f"{case.method} {case.formatted_path}"
    assert set(body) == {"error", "detail"} and body["error"] == "invalid", (where, body)
    assert isinstance(body["detail"], list) and body["detail"], (where, body)
    for problem in body["detail"]:
        assert set(problem) == {"field", "problem"}, (where, body)
        assert isinstance(problem["field"], str) and isinstance(problem["problem"], str)
    case.validate_response(response, checks=[response_schema_conformance])  # type: ignore[arg-type]


def cases(operation: schemathesis.APIOperation) -> st.SearchStrategy[schemathesis.Case]:
    """Valid requests and invalid ones (schemathesis's negative mode), mixed."""
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


def fuzz(app: FastAPI, key: str, check: Check) -> None:
    for operation in operations(app):

        @FUZZ
        @given(case=cases(operation))
        def run(case: schemathesis.Case) -> None:
            response = _call(case, key)
            status, text = response.status_code, response.text
            assert status < 500, f"{case.method} {case.formatted_path}: {status} {text[:500]}"
            if status == 422:
                documented_invalid(case, response, text)
            check(case, status, text)

        run()


def test_no_server_errors_and_documented_422s_with_an_admin_key(plane_app: FastAPI) -> None:
    fuzz(plane_app, ADMIN_KEY, lambda case, status, text: None)


def test_a_read_key_never_gets_a_2xx_on_a_write(plane_app: FastAPI) -> None:
    def no_write(case: schemathesis.Case, status: int, text: str) -> None:
        if is_write(case):
            assert not 200 <= status < 300, f"{case.method} {case.formatted_path}: {status}"

    fuzz(plane_app, READ_KEY, no_write)


def test_no_protected_route_answers_2xx_without_a_valid_key(plane_app: FastAPI) -> None:
    for operation in operations(plane_app):

        @FUZZ
        @given(case=cases(operation), key=st.sampled_from(["", "x", "ss_" + "a" * 43]))
        def check(case: schemathesis.Case, key: str) -> None:
            status = _call(case, key).status_code
            assert status < 500
            if case.path not in OPEN_PATHS:
                assert status in REFUSED_BEFORE_AUTH, (
                    f"{case.method} {case.formatted_path}: {status}"
                )

        check()


def test_every_status_and_body_the_api_answers_is_documented_in_its_schema(
    plane_app: FastAPI,
) -> None:
    """Clients generated from the schema see no undocumented status or body shape."""
    undocumented: dict[tuple[str, str, int], str] = {}
    for operation in operations(plane_app):

        @settings(FUZZ, max_examples=6)
        @given(case=cases(operation))
        def run(case: schemathesis.Case) -> None:
            response = _call(case, ADMIN_KEY)
            try:
                case.validate_response(
                    response, checks=[response_schema_conformance, status_code_conformance]
                )
            except BaseException as exc:  # noqa: BLE001 - schemathesis raises a FailureGroup
                where = (case.method, case.path, response.status_code)
                undocumented.setdefault(where, " ".join(str(exc).split())[:160])

        run()
    assert not undocumented, "\n".join(f"{k}: {v}" for k, v in sorted(undocumented.items()))
