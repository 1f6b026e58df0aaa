"""The README's command-line steps run unattended, as a script or CI would run them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``safeship ...`` lines of the README's shell block that steers a flag."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "safeship flags kill" in b)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("safeship ")]


def test_the_readme_shows_yes_for_the_kill_switch() -> None:
    kill = next(c for c in readme_commands() if c[:3] == ["safeship", "flags", "kill"])
    assert "--yes" in kill


@pytest.mark.postgres
def test_the_readme_commands_run_without_a_terminal(postgres_url: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SAFESHIP_DATABASE_URL": postgres_url}
    commands = [c for c in readme_commands() if c[1] != "serve"]  # serve runs until stopped
    assert len(commands) >= 4
    for command in commands:
        process = subprocess.run(
            [sys.executable, "-m", "safeship.cli_entry", *command[1:]],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert process.returncode == 0, (command, process.stdout, process.stderr)
        assert process.stderr.startswith("using postgresql"), process.stderr
