"""The ``safeship`` command: readable errors, checks, migrations and key management."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safeship.cli import app
from safeship.db import head_revision

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, output = run("--help")
    assert code == 0
    for command in ("serve", "demo", "check", "db", "keys"):
        assert command in output


@pytest.mark.parametrize("command", ["demo", "serve", "check"])
def test_each_command_has_help(command: str) -> None:
    code, output = run(command, "--help")
    assert code == 0 and "Usage" in output


def test_check_passes_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run("db", "upgrade", "--create", "--database-url", url)[0] == 0
    code, output = run("check", "--database-url", url)
    assert code == 0, output
    assert "database" in output and "fail" not in output


def test_check_fails_with_a_clear_report_when_the_database_is_unreachable() -> None:
    code, output = run("check", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 1
    assert "fail" in output and "Connection refused" in output.replace("\n", " ")
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("scheme", "answer"),
    [
        ("nats", "refuses"),
        ("nats", "never-answers"),
        ("amqp", "never-answers"),
        ("redis", "never-answers"),
    ],
)
def test_check_with_an_unreachable_broker_fails_in_bounded_time_without_a_traceback(
    tmp_path: Path, scheme: str, answer: str
) -> None:
    from safeship.checks import CHECK_DEADLINE
    from tests.outbox.faults import BlackHole

    hole = BlackHole()
    if answer == "refuses":
        hole.close()  # nothing listens on the port any more
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run("db", "upgrade", "--create", "--database-url", url)[0] == 0
    try:
        process = subprocess.run(
            [sys.executable, "-m", "safeship.cli_entry", "check", "--database-url", url],
            env={
                "PATH": "/usr/bin:/bin",
                "COLUMNS": "300",
                "SAFESHIP_BROKER_URL": f"{scheme}://127.0.0.1:{hole.port}",
            },
            capture_output=True,
            text=True,
            timeout=CHECK_DEADLINE + 30,  # bounded: each check has its own deadline
            check=False,
        )
    finally:
        hole.close()
    assert process.returncode == 1
    broker_lines = [line for line in process.stdout.splitlines() if "broker" in line]
    assert len(broker_lines) == 1 and "fail" in broker_lines[0], process.stdout
    assert "Traceback" not in process.stdout + process.stderr
    assert process.stderr.strip() == f"using {url}"  # which database, and nothing else


def test_bad_settings_are_one_paragraph_not_a_traceback() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "safeship.cli_entry", "check"],
        env={
            "SAFESHIP_DATABSE_URL": "sqlite:///x.db",
            "SAFESHIP_PORT": "seventy",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 2
    assert "SAFESHIP_DATABSE_URL: unknown setting" in process.stderr
    assert "SAFESHIP_PORT" in process.stderr
    assert "Traceback" not in process.stderr + process.stdout


def test_db_current_reports_revisions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    (tmp_path / "d.db").touch()  # an empty SQLite file: no tables yet
    code, output = run("db", "current", "--database-url", url)
    assert code == 0 and "none (run safeship db upgrade)" in output
    run("db", "upgrade", "--database-url", url)
    code, output = run("db", "current", "--database-url", url)
    assert f"current: {head_revision()}" in output


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert run("db", "upgrade", "--create", "--database-url", url)[0] == 0
    code, output = run("keys", "create", "ops-alice", "--scope", "admin", "--database-url", url)
    assert code == 0 and "ss_" in output
    listed = runner.invoke(app, ["keys", "list", "--database-url", url])
    output = listed.stdout
    assert output.split()[:3] == ["ops-alice", "admin", "active"] and "ss_" not in output
    assert run("keys", "create", "ops-alice", "--database-url", url)[0] == 2
    assert run("keys", "create", "x", "--scope", "root", "--database-url", url)[0] == 2
    assert run("keys", "revoke", "ops-alice", "--database-url", url)[0] == 0
    assert run("keys", "revoke", "ops-alice", "--database-url", url)[0] == 1
