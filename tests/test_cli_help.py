"""Help that reads well when piped, and settings that explain themselves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from safeship.cli import app
from safeship.cli.settings_cmd import SETTING_DOCS
from safeship.settings import Settings

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(group, "commands"):  # a group (typer ships its own click)
        for name, sub in group.commands.items():
            found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _piped_help(paths: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """``safeship ... --help`` as a pipe sees it: one subprocess, a narrow COLUMNS."""
    script = (
        "import sys\nfrom safeship.cli import app\nfor path in eval(sys.argv[1]):\n"
        "    print('=====', ' '.join(path), flush=True)\n"
        "    try:\n        app([*path, '--help'])\n    except SystemExit:\n        pass\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script, repr(paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": os.environ["PATH"], "COLUMNS": "40"},
    )
    sections = process.stdout.split("===== ")[1:]
    return {tuple(s.split("\n", 1)[0].split()): s.split("\n", 1)[1] for s in sections}


@pytest.fixture(scope="module")
def piped_help() -> dict[tuple[str, ...], str]:
    return _piped_help(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "safeship")
def test_piped_help_shows_whole_names_and_sentences_and_no_bool_metavar(
    path: tuple[str, ...], piped_help: dict[tuple[str, ...], str]
) -> None:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    text = piped_help[path]
    assert "Usage:" in text and "<bool>" not in text
    lines = text.splitlines()
    for param in command.params:
        for opt in param.opts:
            assert any(
                re.search(rf"(^|[\s,]){re.escape(opt)}(\s|$|,|\.\.\.)", ln) for ln in lines
            ), opt
        help_text = getattr(param, "help", None)
        if help_text:  # on one line: not wrapped mid-sentence
            assert any(" ".join(help_text.split()) in line for line in lines), help_text
    if hasattr(command, "commands"):
        for name in command.commands:
            assert any(line.split()[:1] == [name] for line in lines), name


def test_an_unknown_variable_suggests_the_closest_one_and_points_to_safeship_settings() -> None:
    result = runner.invoke(app, ["flags", "list"], env={"SAFESHIP_DATABSE_URL": "sqlite://"})
    assert result.exit_code == 2
    assert "SAFESHIP_DATABSE_URL: unknown setting; did you mean SAFESHIP_DATABASE_URL?" in (
        result.output
    )
    assert "`safeship settings` lists every one" in result.output


def test_safeship_settings_lists_every_setting_with_its_default_and_meaning() -> None:
    result = runner.invoke(app, ["settings"], env={"SAFESHIP_NOT_A_SETTING": "1"})
    assert result.exit_code == 0
    assert set(SETTING_DOCS) == set(Settings.model_fields)
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name, doc in SETTING_DOCS.items():
        line = lines[f"SAFESHIP_{name.upper()}"]
        assert doc in line
    assert (
        "8700" in lines["SAFESHIP_PORT"]
        and "sqlite:///./safeship.db" in (lines["SAFESHIP_DATABASE_URL"])
    )
    assert "SAFESHIP_FLAG_<NAME>" in lines


def test_the_settings_page_lists_every_setting() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"SAFESHIP_{name.upper()}" in page, name
