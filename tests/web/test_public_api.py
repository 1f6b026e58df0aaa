"""The public names of safeship.web and safeship.observe are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import safeship.observe
import safeship.observe.health
import safeship.web

DOCS = Path(__file__).parents[2] / "docs"


@pytest.mark.parametrize(
    ("module", "pages"),
    [
        (safeship.web, ["hardening.md", "observability.md"]),
        (safeship.observe, ["observability.md", "metrics.md"]),
        (safeship.observe.health, ["observability.md"]),
    ],
)
def test_every_public_name_is_documented(module: object, pages: list[str]) -> None:
    text = "\n".join((DOCS / page).read_text() for page in pages)
    names = module.__all__  # type: ignore[attr-defined]
    missing = [name for name in names if f"`{name}" not in text and f" {name}(" not in text]
    assert not missing, f"undocumented public names: {missing}"


@pytest.mark.parametrize("module", [safeship.web, safeship.observe, safeship.observe.health])
def test_all_names_exist(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert hasattr(module, name), name
