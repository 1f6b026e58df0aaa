"""schemathesis against the control plane's OpenAPI schema: no 5xx, no unauthenticated 2xx.

Each operation's request strategy comes from schemathesis and runs under hypothesis here,
so the fuzzing does not depend on schemathesis's pytest plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeship.db import create_engine
from safeship.server import create_app
from safeship.web.limiter import LimitPolicy, MemoryFailureStore
from tests.server.support import ADMIN_KEY, make_settings

OPEN_PATHS = {"/health", "/health/ready", "/metrics"}
FUZZ = settings(
    max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture
def plane_app(tmp_path: Path) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine)
    # Fuzzing sends thousands of bad keys: lift the brute-force limit so every request
    # reaches the authentication check instead of stopping at 429.
    unlimited = LimitPolicy(max_per_window=10**9, block_after=10**9)
    app.state.plane.auth_failures = MemoryFailureStore(policy=unlimited)
    yield app
    engine.dispose()


def operations(app: FastAPI) -> list[schemathesis.APIOperation]:  # type: ignore[name-defined]
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 8, "the schema should list every control-plane route"
    return found


def _call(case: schemathesis.Case, key: str) -> tuple[int, str]:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    headers["X-API-Key"] = key
    case.headers = headers
    response = case.call()
    return response.status_code, response.text


def test_no_server_errors_with_an_admin_key(plane_app: FastAPI) -> None:
    for operation in operations(plane_app):

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            status, text = _call(case, ADMIN_KEY)
            assert status < 500, f"{case.method} {case.formatted_path}: {status} {text}"

        check()


def test_no_protected_route_answers_2xx_without_a_valid_key(plane_app: FastAPI) -> None:
    for operation in operations(plane_app):

        @FUZZ
        @given(case=operation.as_strategy(), key=st.sampled_from(["", "x", "ss_" + "a" * 43]))
        def check(case: schemathesis.Case, key: str) -> None:
            status, _ = _call(case, key)
            assert status < 500
            if case.path not in OPEN_PATHS:
                assert status in (401, 422), f"{case.method} {case.formatted_path}: {status}"

        check()
