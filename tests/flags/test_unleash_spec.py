"""Every case of the Unleash client specification shipped next to the repository.

The files live in ``<repo>/../shared/specs/unleash`` (``index.json`` lists them); each has
a ``state`` and ``tests`` (is the flag on?) and/or ``variantTests`` (which variant?).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from safeship.flags import FlagSet
from tests.conftest import REQUIRE_SERVICES

SPEC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "unleash"


def _cases() -> list[Any]:
    if not (SPEC_DIR / "index.json").is_file():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"no {SPEC_DIR}"))]
    params = []
    for file_name in json.loads((SPEC_DIR / "index.json").read_text(encoding="utf-8")):
        spec = json.loads((SPEC_DIR / file_name).read_text(encoding="utf-8"))
        stem = Path(file_name).stem
        for kind in ("tests", "variantTests"):
            for number, case in enumerate(spec.get(kind, [])):
                case_id = f"{stem}/{kind}[{number}] {case['description']}"
                params.append(pytest.param(spec["state"], kind, case, id=case_id))
    return params


_compiled: dict[int, FlagSet] = {}


def _flags(state: dict[str, Any]) -> FlagSet:
    """One compiled snapshot per spec file (the cases of a file share its state)."""
    key = id(state)
    if key not in _compiled:
        _compiled[key] = FlagSet.from_unleash(state)
    return _compiled[key]


def check_spec_case(flags: FlagSet, kind: str, case: dict[str, Any]) -> None:
    """One Unleash specification case: a toggle test (``tests``) or a variant test."""
    if kind == "tests":
        assert flags.is_enabled(case["toggleName"], case["context"]) is case["expectedResult"]
        return
    expected = case["expectedResult"]
    variant = flags.variant(case["toggleName"], case["context"])
    assert variant.name == expected["name"]
    assert variant.enabled is expected["enabled"]
    assert variant.payload == expected.get("payload")
    feature_enabled = expected.get("feature_enabled", expected.get("featureEnabled"))
    if feature_enabled is not None:
        assert variant.feature_enabled is feature_enabled


@pytest.mark.parametrize(("state", "kind", "case"), _cases())
def test_spec_case(state: dict[str, Any], kind: str, case: dict[str, Any]) -> None:
    flags = _flags(state)
    check_spec_case(flags, kind, case)


def test_the_spec_folder_is_found() -> None:
    """Guard against silently skipping everything because the folder moved: CI (and any
    run with SAFESHIP_REQUIRE_SERVICES=1) must have the specs."""
    if not SPEC_DIR.is_dir():
        message = f"the shared specs are not checked out at {SPEC_DIR}"
        if os.environ.get("CI") or REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert len(_cases()) >= 90
