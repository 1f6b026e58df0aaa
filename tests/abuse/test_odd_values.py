"""Odd values on every JSON route: malformed JSON, deep nesting, NUL characters, lone
surrogates, huge integers, year-1 datetimes with +14:00, booleans for numbers, and
confusable names. Each is a 422 in the documented shape naming the field, never a 500,
and never stored."""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.abuse.invalid import assert_invalid, invalid_problems
from tests.abuse.plane import Plane

FLAG = f"odd-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Case:
    """One request carrying one odd value, and the field its 422 must name."""

    method: str
    path: str
    body: Any = None
    field: str = ""
    params: dict[str, str] | None = None

    def send(self, client: httpx.Client) -> httpx.Response:
        content = None if self.body is None else json.dumps(self.body)  # \\u escapes kept
        headers = {"Content-Type": "application/json"} if content is not None else {}
        return client.request(
            self.method, self.path, content=content, headers=headers, params=self.params
        )

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.field}"


@pytest.fixture(scope="module")
def admin(plane: Plane) -> Iterator[httpx.Client]:
    with plane.admin() as client:
        created = client.post("/api/v1/flags", json={"name": FLAG})
        assert created.status_code == 201, created.text
        yield client


def _plan(**plan: object) -> dict[str, object]:
    """A new rollout's body with ``plan``."""
    return {"name": _fresh(), "plan": plan}


def _fresh() -> str:
    return f"odd-new-{uuid.uuid4().hex[:8]}"


def _text_cases(odd: str) -> list[Case]:
    """Every stored text field of the API, carrying ``odd``."""
    f = f"/api/v1/flags/{FLAG}"
    return [
        Case("POST", "/api/v1/flags", {"name": f"odd{odd}x"}, "name"),
        Case("POST", "/api/v1/flags", {"name": _fresh(), "description": odd}, "description"),
        Case("POST", "/api/v1/flags", {"name": _fresh(), "owner": odd}, "owner"),
        Case("POST", "/api/v1/flags", {"name": _fresh(), "reason": odd}, "reason"),
        Case("PUT", f, {"description": odd}, "description"),
        Case("PUT", f, {"owner": odd}, "owner"),
        Case("POST", f"{f}/enable", {"reason": odd}, "reason"),
        Case("POST", f"{f}/rollout", {"percent": 5, "stickiness": odd}, "stickiness"),
        Case("POST", f"{f}/target", {"values": [odd]}, "values"),
        Case("POST", f"{f}/target", {"values": ["a"], "field": odd}, "field"),
        Case("POST", f"{f}/schedule", {"reason": odd}, "reason"),
        Case("POST", "/api/v1/keys", {"name": _fresh(), "scope": "read", "reason": odd}, "reason"),
        Case("POST", "/api/v1/rollouts", {"name": _fresh(), "reason": odd}, "reason"),
        Case("POST", "/api/v1/breakers/s/b/mode", {"mode": "disabled", "reason": odd}, "reason"),
        Case("POST", "/api/v1/outbox/dead/retry", {"aggregate_type": odd}, "aggregate_type"),
        Case("POST", "/api/v1/outbox/dead/retry", {"type": "t", "reason": odd}, "reason"),
        Case("POST", "/api/v1/outbox/dead/purge", {"type": odd, "expected": 0}, "type"),
        Case("GET", "/api/v1/audit", params={"target": odd}, field="target"),
        Case("GET", "/api/v1/outbox/events", params={"aggregate_id": odd}, field="aggregate_id"),
        Case(
            "POST",
            "/api/v1/flags/import",
            {"version": 1, "features": [{"name": _fresh(), "description": odd}]},
            "description",
        ),
    ]


def _wrong(admin: httpx.Client, cases: list[Case]) -> list[str]:
    """The cases not answered with a documented 422 naming their field."""
    wrong = []
    for case in cases:
        try:
            response = case.send(admin)
        except httpx.TransportError as exc:  # the server dropped the connection: a crash
            wrong.append(f"{case}: no answer ({exc!r})")
            continue
        try:
            assert_invalid(response, case.field)
        except AssertionError as exc:
            wrong.append(f"{case}: {response.status_code} {str(exc)[:300]}")
    assert admin.get("/health").status_code == 200
    return wrong


def test_a_nul_character_in_any_text_is_a_422_naming_the_field(admin: httpx.Client) -> None:
    wrong = _wrong(admin, _text_cases("a\x00b"))
    assert not wrong, "\n".join(wrong)


def test_a_lone_surrogate_in_any_text_is_a_422_naming_the_field(admin: httpx.Client) -> None:
    cases = [c for c in _text_cases("a\ud800b") if c.method != "GET"]  # not a URL's text
    wrong = _wrong(admin, cases)
    assert not wrong, "\n".join(wrong)


def test_a_nul_in_a_path_name_is_refused_not_a_server_error(admin: httpx.Client) -> None:
    paths = [
        ("GET", "/api/v1/flags/a%00b"),
        ("GET", "/api/v1/flags/a%00b/history"),
        ("GET", "/api/v1/rollouts/a%00b"),
        ("POST", "/api/v1/keys/a%00b/revoke"),
        ("POST", "/api/v1/flags/a%00b/enable"),
        ("POST", "/api/v1/rollouts/a%00b/pause"),
        ("DELETE", "/api/v1/flags/a%00b"),
    ]
    wrong = []
    for method, path in paths:
        response = admin.request(method, path, json={} if method == "POST" else None)
        if response.status_code not in (404, 422):
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        elif response.status_code == 422:
            invalid_problems(response)
    assert not wrong, "\n".join(wrong)


def test_malformed_json_is_a_documented_422_on_every_json_route(admin: httpx.Client) -> None:
    routes = [
        ("POST", "/api/v1/flags"),
        ("PUT", f"/api/v1/flags/{FLAG}"),
        ("POST", "/api/v1/flags/import"),
        ("POST", "/api/v1/flags/evaluate"),
        ("POST", f"/api/v1/flags/{FLAG}/rollout"),
        ("POST", "/api/v1/keys"),
        ("POST", "/api/v1/rollouts"),
        ("POST", "/api/v1/outbox/dead/retry"),
        ("POST", "/api/v1/outbox/dead/purge"),
        ("POST", "/api/v1/flags/kill"),
        ("POST", "/api/v1/rollouts/emergency"),
    ]
    bodies = [b'{"name": ', b"[", b'{"name": "x",}', b"\xff\xfe{}", b"NaN", b"", b"{}}"]
    wrong = []
    for method, path in routes:
        for body in bodies:
            response = admin.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            try:
                invalid_problems(response)
            except AssertionError as exc:
                wrong.append(f"{method} {path} {body!r}: {str(exc)[:200]}")
    assert not wrong, "\n".join(wrong)
    assert admin.get("/api/v1/flags").json()["killed_at"] is None


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_is_refused_without_a_server_error(admin: httpx.Client) -> None:
    wrong = []
    for depth in (200, 5_000, 100_000):
        deep = _nested(depth)
        bodies = [
            ("POST", "/api/v1/flags", f'{{"name": "{_fresh()}", "definition": {{"x": {deep}}}}}'),
            ("POST", "/api/v1/flags/evaluate", f'{{"name": "{FLAG}", "context": {{"x": {deep}}}}}'),
            ("POST", "/api/v1/flags/import", f'{{"version": 1, "features": {deep}}}'),
            ("PUT", f"/api/v1/flags/{FLAG}", f'{{"definition": {{"x": {deep}}}}}'),
        ]
        for method, path, body in bodies:
            response = admin.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            refused = response.status_code in (400, 413, 422)
            if not refused and not (path.endswith("/evaluate") and response.status_code == 200):
                wrong.append(f"depth {depth} {method} {path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert admin.get(f"/api/v1/flags/{FLAG}").status_code == 200


def test_huge_integers_are_a_422_naming_the_field(admin: httpx.Client) -> None:
    huge = 10**23
    feature = {"name": _fresh(), "strategies": [{"name": "default", "segments": [huge]}]}
    cases = [
        Case(
            "POST",
            "/api/v1/flags/import",
            {"version": 1, "features": [], "segments": [{"id": huge, "constraints": []}]},
            "id",
        ),
        Case("POST", "/api/v1/flags/import", {"version": 1, "features": [feature]}, "segments"),
        Case("POST", "/api/v1/outbox/dead/purge", {"expected": huge}, "expected"),
        Case("POST", "/api/v1/rollouts", _plan(min_sample=huge), "min_sample"),
        Case("POST", "/api/v1/flags", {"name": _fresh(), "lifetime_days": huge}, "lifetime_days"),
        Case("GET", "/api/v1/audit", params={"before_id": str(huge)}, field="before_id"),
    ]
    wrong = _wrong(admin, cases)
    assert not wrong, "\n".join(wrong)


def test_datetimes_out_of_range_once_in_utc_are_a_422_naming_the_field(
    admin: httpx.Client,
) -> None:
    path = f"/api/v1/flags/{FLAG}/schedule"
    cases = [
        Case("POST", path, {"enable_at": "0001-01-01T00:00:00+14:00"}, "enable_at"),
        Case("POST", path, {"disable_at": "0001-01-01T05:00:00+14:00"}, "disable_at"),
        Case("POST", path, {"disable_at": "9999-12-31T23:59:59-14:00"}, "disable_at"),
    ]
    wrong = _wrong(admin, cases)
    assert not wrong, "\n".join(wrong)


def test_booleans_are_not_taken_for_numbers_nor_numbers_for_booleans(
    admin: httpx.Client,
) -> None:
    f = f"/api/v1/flags/{FLAG}"
    cases = [
        Case("POST", f"{f}/rollout", {"percent": False}, "percent"),
        Case("POST", f"{f}/rollout", {"percent": True}, "percent"),
        Case("POST", "/api/v1/flags", {"name": _fresh(), "lifetime_days": True}, "lifetime_days"),
        Case("PUT", f, {"lifetime_days": True}, "lifetime_days"),
        Case("PUT", f, {"safe_value": 1}, "safe_value"),
        Case("POST", "/api/v1/rollouts", _plan(steps=[True, 100]), "steps"),
        Case("POST", "/api/v1/rollouts", _plan(min_hold=False), "min_hold"),
        Case("POST", "/api/v1/rollouts", _plan(min_sample=False), "min_sample"),
        Case("POST", "/api/v1/outbox/dead/purge", {"expected": False}, "expected"),
        Case("POST", "/api/v1/outbox/dead/retry", {"everything": 1}, "everything"),
    ]
    wrong = _wrong(admin, cases)
    assert not wrong, "\n".join(wrong)
    assert admin.get(f).json()["rollout_percent"] != 0


CONFUSABLE = {
    "nfd": "cafe\u0301-menu",
    "nfc": "caf\u00e9-menu",
    "right-to-left override": "pay\u202elortnoc",
    "zero-width space": "check\u200bout-v2",
    "zero-width joiner": "check\u200dout-v2",
    "fullwidth": "\uff43heckout-v2",
}


def _skeleton(name: str) -> str:
    visible = "".join(ch for ch in name if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible).casefold()


def test_confusable_flag_names_are_refused_or_normalised_never_stored_twice(
    admin: httpx.Client,
) -> None:
    for plain in ("checkout-v2", "cafe-menu"):
        admin.post("/api/v1/flags", json={"name": plain})
    answers = {}
    for label, name in CONFUSABLE.items():
        for path in ("/api/v1/flags", "/api/v1/rollouts"):
            response = Case("POST", path, {"name": name}).send(admin)
            answers[f"{label} {path}"] = response.status_code
            if response.status_code == 422:
                invalid_problems(response)
    assert all(s < 500 for s in answers.values()), answers
    names = [f["name"] for f in admin.get("/api/v1/flags").json()["flags"]]
    hidden = [n for n in names if any(unicodedata.category(ch) == "Cf" for ch in n)]
    assert not hidden, f"names holding invisible or bidi characters were stored: {hidden!r}"
    unnormalised = [n for n in names if unicodedata.normalize("NFC", n) != n]
    assert not unnormalised, f"names stored unnormalised: {unnormalised!r}"
    skeletons: dict[str, str] = {}
    for name in names:
        twin = skeletons.setdefault(_skeleton(name), name)
        assert twin == name, f"{name!r} and {twin!r} look the same: {answers}"


def test_the_outbox_audit_and_key_routes_refuse_odd_values_with_a_422(
    admin: httpx.Client,
) -> None:
    """The routes of the outbox, audit trail and API keys, each odd value class at once."""
    cases = [
        *(
            c
            for odd in ("a\x00b", "a\ud800b")
            for c in _text_cases(odd)
            if c.path.startswith(("/api/v1/outbox", "/api/v1/audit", "/api/v1/keys"))
            and not (c.method == "GET" and "\ud800" in odd)
        ),
        Case("POST", "/api/v1/outbox/dead/purge", {"expected": False}, "expected"),
        Case("POST", "/api/v1/outbox/dead/purge", {"expected": "3"}, "expected"),
        Case("POST", "/api/v1/outbox/dead/retry", {"everything": 1}, "everything"),
        Case("POST", "/api/v1/outbox/dead/retry", {"type": 5}, "type"),
        Case("POST", "/api/v1/outbox/dead/retry", {}, "everything"),
        Case("POST", "/api/v1/keys", {"name": _fresh(), "scope": "read", "reason": 5}, "reason"),
        Case("POST", "/api/v1/keys/a%00b/revoke", {}, "name"),
    ]
    wrong = _wrong(admin, cases)
    assert not wrong, "\n".join(wrong)
