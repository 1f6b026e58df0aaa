"""``safeship flags ...`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from safeship.cli import app

runner = CliRunner()


def migrated(path: Path) -> str:
    """The URL of a new SQLite file at ``path``, created and migrated by the CLI."""
    url = f"sqlite:///{path}"
    result = runner.invoke(app, ["db", "upgrade", "--create", "--database-url", url])
    assert result.exit_code == 0, result.output
    return url


def run(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["flags", *args, "--database-url", url], env=env)
    return result.exit_code, result.output


def stdout_of(url: str, *args: str) -> str:
    """What a command printed on stdout alone (stderr says which database)."""
    result = runner.invoke(app, ["flags", *args, "--database-url", url])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_flags_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    url = migrated(tmp_path / "f.db")
    assert run(url, "create", "checkout-v2", "--description", "new checkout")[0] == 0
    code, output = run(url, "rollout", "checkout-v2", "25%", "--stickiness", "userId")
    assert code == 0 and "on, rollout 25%" in output
    code, output = run(url, "target", "checkout-v2", "7", "9")
    assert code == 0 and "2 userId(s)" in output
    code, output = run(url, "list", env={"SAFESHIP_FLAG_CHECKOUT_V2": "off"})
    assert "checkout-v2" in output and "off" in output  # the env override column
    assert json.loads(stdout_of(url, "get", "checkout-v2"))["rollout_percent"] == 25.0
    code, output = run(url, "kill", "--reason", "drill", "--yes")
    assert code == 0 and "1 flag(s) changed" in output
    code, output = run(url, "restore")
    assert code == 0 and "restored 1" in output


def test_errors_are_readable(tmp_path: Path) -> None:
    url = migrated(tmp_path / "e.db")
    code, output = run(url, "enable", "missing")
    assert code == 1 and "no flag named 'missing'" in output
    run(url, "create", "f")
    code, output = run(url, "rollout", "f", "150%")
    assert code == 2 and "between 0% and 100%" in output
    code, output = run(url, "create", "f")
    assert code == 2 and "exists" in output
    assert "Traceback" not in output


def test_import_and_export_files(tmp_path: Path) -> None:
    url = migrated(tmp_path / "i.db")
    source = tmp_path / "state.json"
    source.write_text(
        json.dumps(
            {
                "version": 1,
                "features": [{"name": "imp", "enabled": True, "strategies": [{"name": "default"}]}],
            }
        )
    )
    assert run(url, "import", str(source))[0] == 0
    target = tmp_path / "out.json"
    assert run(url, "export", str(target))[0] == 0
    assert json.loads(target.read_text())["features"][0]["name"] == "imp"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, output = run(url, "import", str(bad))
    assert code == 2 and "cannot read" in output
    code, output = run(url, "stale", "--days", "1")
    assert code == 0


def test_an_edit_with_a_stale_version_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    url = migrated(tmp_path / "v.db")
    run(url, "create", "f")
    read = json.loads(stdout_of(url, "get", "f"))["version"]
    assert run(url, "enable", "f", "--if-version", str(read))[0] == 0
    code, output = run(url, "rollout", "f", "10%", "--if-version", str(read))
    assert code == 3 and "changed since it was read" in output
    assert json.loads(stdout_of(url, "get", "f"))["rollout_percent"] == 100.0


def test_lookalike_names_are_refused(tmp_path: Path) -> None:
    url = migrated(tmp_path / "n.db")
    for name in ("pay\u202ement", "cafe\u0301", "zero\u200bwidth", "ｆｌａｇ"):
        code, output = run(url, "create", name)
        assert code == 2 and "is not allowed" in output, output
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"features": [{"name": "caf\u00e9"}]}))
    code, output = run(url, "import", str(state))
    assert code == 2 and "features[0].name" in output


def test_kill_without_a_terminal_needs_yes_and_says_so(tmp_path: Path) -> None:
    url = migrated(tmp_path / "k.db")
    run(url, "create", "f")
    run(url, "enable", "f")
    code, output = run(url, "kill", "--reason", "drill")  # stdin is not a terminal here
    assert code == 2 and "pass --yes" in output
    assert json.loads(stdout_of(url, "get", "f"))["enabled"] is True
    code, output = run(url, "kill", "--reason", "drill", "--yes")
    assert code == 0 and json.loads(stdout_of(url, "get", "f"))["enabled"] is False


def test_export_then_import_into_a_fresh_database_keeps_every_field(tmp_path: Path) -> None:
    source = migrated(tmp_path / "a.db")
    run(source, "create", "checkout", "--description", "new checkout", "--owner", "payments")
    run(source, "create", "beta", "--safe-on", "--lifetime-days", "30", "--owner", "growth")
    run(source, "rollout", "checkout", "25%", "--stickiness", "userId")
    run(source, "target", "beta", "7", "9", "--field", "tenantId")
    first = stdout_of(source, "export")
    (tmp_path / "state.json").write_text(first)
    copy = migrated(tmp_path / "b.db")
    assert run(copy, "import", str(tmp_path / "state.json"))[0] == 0
    assert stdout_of(copy, "export") == first
    record = json.loads(stdout_of(copy, "get", "beta"))
    assert (record["owner"], record["safe_value"], record["lifetime_days"]) == ("growth", True, 30)
    assert json.loads(stdout_of(copy, "get", "checkout"))["description"] == "new checkout"


def test_a_plain_unleash_import_with_bad_safeship_fields_is_refused_whole(tmp_path: Path) -> None:
    url = migrated(tmp_path / "m.db")
    state = {
        "features": [{"name": "x", "enabled": True, "strategies": [{"name": "default"}]}],
        "safeship": {"flags": {"x": {"owner": "o", "colour": "red"}}},
    }
    (tmp_path / "s.json").write_text(json.dumps(state))
    code, output = run(url, "import", str(tmp_path / "s.json"))
    assert code == 2 and "safeship.flags.x" in output
    assert run(url, "get", "x")[0] == 1  # nothing imported


def test_rollout_keeps_the_stickiness_it_had_unless_told_otherwise(tmp_path: Path) -> None:
    url = migrated(tmp_path / "s.db")
    run(url, "create", "f")
    run(url, "rollout", "f", "25%", "--stickiness", "userId")
    code, output = run(url, "rollout", "f", "100%")
    assert code == 0 and "100% by userId" in output
    code, output = run(url, "rollout", "f", "50%", "--stickiness", "sessionId")
    assert code == 0 and "50% by sessionId" in output


def test_delete_asks_for_yes_without_a_terminal_and_respects_the_version(tmp_path: Path) -> None:
    url = migrated(tmp_path / "d.db")
    run(url, "create", "f")
    code, output = run(url, "delete", "f")
    assert code == 2 and "pass --yes" in output
    assert run(url, "get", "f")[0] == 0
    code, output = run(url, "delete", "f", "--yes", "--if-version", "99")
    assert code == 3 and run(url, "get", "f")[0] == 0
    code, output = run(url, "delete", "f", "--yes", "--reason", "done")
    assert code == 0 and "deleted f" in output
    code, output = run(url, "get", "f")
    assert code == 1 and "no flag named 'f'" in output
