"""The documented 422 body (docs/control-plane.md): ``{"error": "invalid", "detail":
[{"field": ..., "problem": ...}, ...]}``, one entry per invalid input."""

from __future__ import annotations

import re
from typing import Any

import httpx


def invalid_problems(response: httpx.Response) -> list[dict[str, Any]]:
    """The problems of a documented 422 body; fails the test on any other answer."""
    assert response.status_code == 422, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == "invalid", body
    detail = body["detail"]
    assert isinstance(detail, list) and detail, f"detail must list the problems: {body}"
    for problem in detail:
        assert set(problem) == {"field", "problem"}, problem
        assert isinstance(problem["field"], str) and isinstance(problem["problem"], str)
        assert problem["problem"], problem
    return detail


def assert_invalid(response: httpx.Response, field: str) -> None:
    """A documented 422 whose problems name ``field``."""
    problems = invalid_problems(response)
    named = [re.split(r"[.\[\]]+", p["field"]) for p in problems]
    assert any(field in parts for parts in named), f"no problem names {field!r}: {problems}"
