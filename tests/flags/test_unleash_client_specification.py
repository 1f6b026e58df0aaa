"""Every case of the published Unleash client specification, against safeship's engine.

The specification is the npm package ``@unleash/client-specification``, pinned as a
devDependency in ``tests/reach/node/package.json`` (``make reach-node`` installs it; ``make
test`` runs that first). ``specifications/index.json`` lists its files; each has a ``state``
(the ``/api/client/features`` format, or for the delta files ``{"events": [...]}`` as
``/api/client/delta`` serves it) and ``tests`` (is the flag on?) and/or ``variantTests``
(which variant, with its payload and whether it is enabled).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from safeship.flags import FlagSet
from tests.conftest import REQUIRE_SERVICES
from tests.flags.test_unleash_spec import check_spec_case

PACKAGE = (
    Path(__file__).resolve().parents[1]
    / "reach"
    / "node"
    / "node_modules"
    / "@unleash"
    / "client-specification"
)
SPEC_DIR = PACKAGE / "specifications"
PINNED = json.loads(
    (Path(__file__).resolve().parents[1] / "reach" / "node" / "package.json").read_text("utf-8")
)["devDependencies"]["@unleash/client-specification"]


def _missing() -> str | None:
    if not (SPEC_DIR / "index.json").is_file():
        return f"{SPEC_DIR} is missing: run `make reach-node`"
    version = json.loads((PACKAGE / "package.json").read_text("utf-8"))["version"]
    if version != PINNED:
        return f"specification {version} installed, {PINNED} pinned: run `make reach-node`"
    return None


def _files() -> list[str]:
    return list(json.loads((SPEC_DIR / "index.json").read_text(encoding="utf-8")))


def _cases() -> list[Any]:
    problem = _missing()
    if problem is not None:
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason=problem))]
    params = []
    for file_name in _files():
        spec = json.loads((SPEC_DIR / file_name).read_text(encoding="utf-8"))
        stem = Path(file_name).stem
        for kind in ("tests", "variantTests"):
            for number, case in enumerate(spec.get(kind, [])):
                case_id = f"{stem}/{kind}[{number}] {case['description']}"
                params.append(pytest.param(file_name, kind, case, id=case_id))
    return params


_compiled: dict[str, FlagSet] = {}


def _flags(file_name: str) -> FlagSet:
    """One compiled snapshot per specification file (its cases share its state)."""
    if file_name not in _compiled:
        spec = json.loads((SPEC_DIR / file_name).read_text(encoding="utf-8"))
        _compiled[file_name] = FlagSet.from_unleash(spec["state"])
    return _compiled[file_name]


@pytest.mark.parametrize(("file_name", "kind", "case"), _cases())
def test_specification_case(file_name: str, kind: str, case: dict[str, Any]) -> None:
    flags = _flags(file_name)
    check_spec_case(flags, kind, case)


def test_the_whole_specification_is_installed_and_run() -> None:
    """Guard against silently skipping everything: CI (and any run with
    SAFESHIP_REQUIRE_SERVICES=1) must have the pinned package, and every file of its index
    must exist and hold cases."""
    problem = _missing()
    if problem is not None:
        if os.environ.get("CI") or REQUIRE_SERVICES:
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    files = _files()
    assert len(files) >= 22
    for file_name in files:
        spec = json.loads((SPEC_DIR / file_name).read_text(encoding="utf-8"))
        assert spec.get("tests") or spec.get("variantTests"), file_name
    assert len(_cases()) >= 279  # 6.1.0 has 279 cases in 22 files
