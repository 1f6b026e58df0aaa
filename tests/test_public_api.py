"""``safeship.__all__`` is exactly what docs/api.md lists, and every name resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import safeship

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def documented_names() -> set[str]:
    text = DOC.read_text()
    block = text.split("<!-- public-api:safeship -->", 1)[1].split("<!-- /public-api -->", 1)[0]
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", block))


def test_all_matches_the_documentation() -> None:
    assert set(safeship.__all__) == documented_names()


def test_every_public_name_resolves() -> None:
    for name in safeship.__all__:
        assert getattr(safeship, name) is not None, name


def test_importing_safeship_stays_light() -> None:
    code = (
        "import sys, safeship; heavy = [m for m in ('fastapi', 'sqlalchemy', 'uvicorn') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
