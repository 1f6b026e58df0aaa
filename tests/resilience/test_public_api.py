"""The public API is exactly what the user guide lists, and its examples' names exist."""

from __future__ import annotations

import re
from pathlib import Path

import safeship.resilience as resilience

DOC = Path(__file__).parents[2] / "docs" / "resilience.md"


def test_all_matches_the_documented_list() -> None:
    text = DOC.read_text()
    block = text.split("<!-- api:start -->")[1].split("<!-- api:end -->")[0]
    documented = set(re.findall(r"`([A-Za-z_]+)`", block))
    assert documented == set(resilience.__all__)


def test_every_exported_name_exists() -> None:
    for name in resilience.__all__:
        assert hasattr(resilience, name), name


def test_importing_configures_no_logging_handlers() -> None:
    import logging

    assert logging.getLogger("safeship.resilience").handlers == []
    assert logging.getLevelName(45) == "ALERT"
