"""Commands say which database they use, and none creates or migrates one silently."""

from __future__ import annotations

import getpass
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from safeship.cli import app
from safeship.db import create_engine, head_revision, upgrade
from safeship.rollouts import RolloutGuard

runner = CliRunner()

#: Every command that touches a database except ``db upgrade``, with the arguments it needs.
DATABASE_COMMANDS = [
    ["flags", "list"],
    ["flags", "get", "f"],
    ["flags", "create", "f"],
    ["flags", "rollout", "f", "10%"],
    ["flags", "kill", "--reason", "r", "--yes"],
    ["flags", "export"],
    ["flags", "delete", "f", "--yes"],
    ["breakers", "list"],
    ["breakers", "mode", "svc", "b", "forced_open"],
    ["rollouts", "list"],
    ["rollouts", "pause", "r"],
    ["outbox", "stats"],
    ["outbox", "retry", "--all"],
    ["keys", "list"],
    ["keys", "create", "k"],
    ["keys", "revoke", "k"],
]


def invoke(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--database-url", url])
    return result.exit_code, result.stdout, result.stderr


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def with_password(url: str) -> str:
    return url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], *DATABASE_COMMANDS])
def test_each_command_first_says_which_database_with_the_password_masked(
    postgres_url: str, command: list[str]
) -> None:
    url = with_password(postgres_url)
    _code, stdout, stderr = invoke(url, *command)
    masked = url.replace("s3cret-pw", "***")
    assert stderr.splitlines()[0] == f"using {masked}"
    assert "s3cret-pw" not in stdout + stderr


def test_sqlite_paths_are_shown_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = invoke("sqlite:///./here.db", "db", "upgrade", "--create")
    assert code == 0 and stderr.splitlines()[0] == f"using sqlite:///{tmp_path / 'here.db'}"


@pytest.mark.postgres
@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_an_unmigrated_database_is_refused_and_left_untouched(
    postgres_url: str, command: list[str]
) -> None:
    code, _stdout, stderr = invoke(postgres_url, *command)
    assert code != 0
    assert "run `safeship db upgrade`" in stderr and "Traceback" not in stderr
    assert tables(postgres_url) == set()


@pytest.mark.parametrize("command", DATABASE_COMMANDS[:3])
def test_an_empty_sqlite_file_is_refused_and_left_untouched(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, _, stderr = invoke(url, *command)
    assert code == 2 and "run `safeship db upgrade`" in stderr
    assert tables(url) == set()


def test_serve_refuses_an_unmigrated_database_instead_of_migrating_it(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    process = subprocess.run(
        [sys.executable, "-m", "safeship.cli_entry", "serve", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert process.returncode == 2, process.stderr
    assert "run `safeship db upgrade`" in process.stderr
    assert tables(url) == set()


def test_a_stale_schema_names_its_revision_and_the_one_needed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0003_breakers")
    engine.dispose()
    code, _, stderr = invoke(url, "flags", "list")
    assert code == 2
    assert f"schema at 0003_breakers, package needs {head_revision()}" in stderr
    assert "run `safeship db upgrade`" in stderr
    code, stdout, stderr = invoke(url, "db", "upgrade")
    assert code == 0 and f"at revision {head_revision()} (was 0003_breakers)" in stdout
    assert invoke(url, "flags", "list")[0] == 0


@pytest.mark.parametrize(
    "command", [["db", "upgrade"], ["db", "current"], ["check"], *DATABASE_COMMANDS[:2]]
)
def test_a_missing_sqlite_file_is_refused_and_not_created(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "missing.db"
    code, _, stderr = invoke(f"sqlite:///{path}", *command)
    assert code == 2 and f"no SQLite database at {path}" in stderr
    assert "safeship db upgrade --create" in stderr
    assert not path.exists()


def test_db_upgrade_create_makes_and_migrates_a_new_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    code, stdout, _ = invoke(f"sqlite:///{path}", "db", "upgrade", "--create")
    assert code == 0 and f"database at revision {head_revision()}" in stdout
    assert "safeship_flags" in tables(f"sqlite:///{path}")


def _on_a_terminal(args: list[str], answer: bytes, cwd: Path) -> tuple[int, str]:
    """Run the CLI with stdin and stderr on a pseudo-terminal; type ``answer``."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "safeship.cli_entry", *args],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd)},
    )
    os.close(terminal)
    os.write(controller, answer)
    stdout, _ = process.communicate(timeout=60)
    seen = b""
    try:
        while chunk := os.read(controller, 4096):
            seen += chunk
    except OSError:  # the terminal closed with the process
        pass
    os.close(controller)
    return process.returncode, (seen + stdout).decode(errors="replace")


def test_on_a_terminal_db_upgrade_asks_before_creating_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'asked.db'}"
    code, output = _on_a_terminal(["db", "upgrade", "--database-url", url], b"n\n", tmp_path)
    assert code == 1 and "Create it?" in output and not (tmp_path / "asked.db").exists()
    code, output = _on_a_terminal(["db", "upgrade", "--database-url", url], b"y\n", tmp_path)
    assert code == 0 and "database at revision" in output and (tmp_path / "asked.db").exists()


def test_every_cli_write_is_audited_as_cli_and_the_os_user(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert invoke(url, "db", "upgrade", "--create")[0] == 0
    engine = create_engine(url)
    guard_engine = create_engine(url)
    from safeship.flags.store import FlagStore

    RolloutGuard(guard_engine, FlagStore(guard_engine)).create("orders", actor="app")
    guard_engine.dispose()
    export = tmp_path / "state.json"
    writes = [
        ["flags", "create", "f", "--owner", "o"],
        ["flags", "enable", "f"],
        ["flags", "disable", "f"],
        ["flags", "rollout", "f", "20%"],
        ["flags", "target", "f", "7"],
        ["flags", "kill", "--reason", "drill", "--yes"],
        ["flags", "restore"],
        ["flags", "export", str(export)],
        ["flags", "import", str(export)],
        ["flags", "delete", "f", "--yes"],
        ["breakers", "mode", "svc", "b", "forced_open"],
        ["rollouts", "pause", "orders"],
        ["outbox", "retry", "--all"],
        ["outbox", "purge", "--yes", "0"],
        ["keys", "create", "k"],
        ["keys", "revoke", "k"],
    ]
    for command in writes:
        code, stdout, stderr = invoke(url, *command)
        assert code == 0, (command, stdout, stderr)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action, actor FROM safeship_audit")).all()
    engine.dispose()
    by_cli = {action: actor for action, actor in rows if action != "rollout.create"}
    expected = f"cli:{getpass.getuser()}"
    assert set(by_cli.values()) == {expected}, by_cli
    # every kind of write above left its audit line
    assert {"flag.create", "flag.delete", "flags.import", "outbox.retry", "outbox.purge"} <= set(
        by_cli
    )
    assert len(by_cli) >= 12, sorted(by_cli)
