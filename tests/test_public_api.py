"""``safeship.__all__`` and each slice facade's ``__all__`` are exactly what docs/api.md
lists, every name resolves, and the documented public submodules import."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


#: The packages whose ``__all__`` docs/api.md lists name by name.
SLICES = [
    "safeship.outbox",
    "safeship.resilience",
    "safeship.flags",
    "safeship.rollouts",
    "safeship.observe",
    "safeship.web",
    "safeship.db",
    "safeship.data",
    "safeship.idempotency",
    "safeship.jobs",
    "safeship.integrations",
    "safeship.cache",
]
FACADES = ["safeship", *SLICES]
#: Slices whose documented public submodules are listed (``web`` and ``db`` have none).
WITH_MODULES = [
    "safeship.outbox",
    "safeship.resilience",
    "safeship.flags",
    "safeship.rollouts",
    "safeship.observe",
    "safeship.integrations",
]
SRC = Path(__file__).resolve().parents[1] / "src"


def _block(kind: str, package: str) -> str:
    text = DOC.read_text()
    return text.split(f"<!-- {kind}:{package} -->", 1)[1].split(f"<!-- /{kind} -->", 1)[0]


def documented_names(package: str = "safeship") -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", _block("public-api", package)))


@pytest.mark.parametrize("package", FACADES)
def test_all_matches_the_documentation(package: str) -> None:
    assert set(importlib.import_module(package).__all__) == documented_names(package)


@pytest.mark.parametrize("package", FACADES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def public_modules(package: str) -> list[str]:
    if package not in WITH_MODULES:
        return []
    return re.findall(r"`([a-z_.]+)`", _block("public-modules", package))


@pytest.mark.parametrize("package", WITH_MODULES)
def test_every_documented_public_submodule_imports(package: str) -> None:
    modules = public_modules(package)
    assert modules and all(name.startswith(f"{package}.") for name in modules)
    for name in modules:
        importlib.import_module(name)


@pytest.mark.parametrize("package", SLICES)
def test_every_other_module_of_a_slice_is_private(package: str) -> None:
    """A module that is neither the facade nor a documented public one is named ``_x``."""
    public = set(public_modules(package))
    folder = SRC / package.replace(".", "/")
    exposed = []
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or any(part.startswith("_") for part in parts) or "migrations" in parts:
            continue
        name = ".".join((package, *parts))
        # A module inside a public subpackage is public with it (``outbox.sinks.nats``).
        if not any(name == mod or name.startswith(mod + ".") for mod in public):
            exposed.append(name)
    assert exposed == []


def test_importing_safeship_stays_light() -> None:
    code = (
        "import sys, safeship; heavy = [m for m in ('fastapi', 'sqlalchemy', 'uvicorn') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
