"""The public names of ``safeship.flags`` are the ones the documentation shows."""

from __future__ import annotations

import re
from pathlib import Path

import safeship.flags

DOCS = Path(__file__).resolve().parents[2] / "docs" / "flags.md"


def test_all_is_the_documented_api() -> None:
    assert set(safeship.flags.__all__) == {
        "DISABLED_VARIANT",
        "Context",
        "ContextLike",
        "EvaluationCounter",
        "FlagCounts",
        "FlagProblem",
        "FlagSet",
        "FlagSource",
        "FlagStateError",
        "Variant",
    }
    for name in safeship.flags.__all__:
        assert getattr(safeship.flags, name) is not None


def test_the_guide_mentions_every_public_name() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [name for name in safeship.flags.__all__ if not re.search(rf"\b{name}\b", text)]
    assert missing == []
