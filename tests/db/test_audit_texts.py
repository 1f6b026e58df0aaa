"""Audit texts always fit: no change fails because of how it is described (SQLite and
PostgreSQL), and every reason the API accepts fits the audit trail as given."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, list_audit, record_audit, upgrade
from safeship.db._audit import MAX_REASON, fit_text
from safeship.flags.store import FlagStore
from safeship.server import create_app
from tests.server.support import make_settings

MARKER = re.compile(r" \[… (\d+) more characters cut\]$")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_fit_text_keeps_short_texts_and_cuts_long_ones_visibly() -> None:
    assert fit_text(None) is None and fit_text("drill") == "drill"
    assert fit_text("x" * MAX_REASON) == "x" * MAX_REASON
    cut = fit_text("emergency: " + "r" * MAX_REASON)
    assert len(cut) <= MAX_REASON and cut.startswith("emergency: rrr")
    match = MARKER.search(cut)
    assert match is not None
    kept = len(cut) - len(match.group(0))
    assert kept + int(match.group(1)) == len("emergency: ") + MAX_REASON
    assert fit_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert fit_text("abcdef", 3) == "abc"  # narrower than the marker: the head alone


def test_a_derived_reason_over_the_limit_is_stored_cut_not_refused(engine: sa.Engine) -> None:
    reason = "rollback: emergency: " + "why " * (MAX_REASON // 4)
    with engine.begin() as conn:
        record_audit(conn, actor="ops", action="flag.disable", target="flag:x", reason=reason)
        record_audit(conn, actor="ops", action="flag.enable", target="flag:x", reason="a\x00b")
    with engine.connect() as conn:
        nul, long = list_audit(conn, limit=2)
    assert long.reason == fit_text(reason) and MARKER.search(long.reason or "")
    assert nul.reason == "a\ufffdb"


def test_every_audited_store_write_takes_any_reason(engine: sa.Engine) -> None:
    store = FlagStore(engine)
    store.create("checkout", actor="lib", reason="r" * 5 * MAX_REASON)
    store.set_enabled("checkout", True, actor="lib", reason="x\x00" * MAX_REASON)
    assert store.kill(actor="lib", reason="k" * 3 * MAX_REASON) == {"checkout": False}
    reasons = [r.reason or "" for r in store.history("checkout")]
    assert len(reasons) == 2 and all(len(r) <= MAX_REASON for r in reasons)


def _text_limit(schema: dict[str, Any]) -> int | None:
    outer = schema.get("maxLength", 10**9)  # query parameters carry it outside anyOf
    texts = [v for v in schema.get("anyOf", [schema]) if v.get("type") == "string"]
    return max((v.get("maxLength", outer) for v in texts), default=None)


def _reason_limits(schema: dict[str, Any]) -> dict[str, int | None]:
    """Every ``reason`` a request carries (body or query): its longest accepted text."""
    models = schema["components"]["schemas"]
    found: dict[str, int | None] = {}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "reason":
                    found[where] = _text_limit(parameter["schema"])
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                ref = media["schema"].get("$ref", "")
                reason = models.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
                if "reason" in reason:
                    found[where] = _text_limit(reason["reason"])
    return found


def test_every_reason_the_api_accepts_fits_the_audit_trail_as_given(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    schema = create_app(make_settings(url)).openapi()
    limits = _reason_limits(schema)
    assert "POST /api/v1/rollouts/emergency" in limits and len(limits) > 10, limits
    too_long = {where: limit for where, limit in limits.items() if (limit or 0) > MAX_REASON}
    assert not too_long, f"reasons the audit trail would have to cut: {too_long}"
