"""``safeship flags ...`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from safeship.cli import app

runner = CliRunner()


def run(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["flags", *args, "--database-url", url], env=env)
    return result.exit_code, result.output


def test_flags_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    assert run(url, "create", "checkout-v2", "--description", "new checkout")[0] == 0
    code, output = run(url, "rollout", "checkout-v2", "25%", "--stickiness", "userId")
    assert code == 0 and "on, rollout 25%" in output
    code, output = run(url, "target", "checkout-v2", "7", "9")
    assert code == 0 and "2 userId(s)" in output
    code, output = run(url, "list", env={"SAFESHIP_FLAG_CHECKOUT_V2": "off"})
    assert "checkout-v2" in output and "off" in output  # the env override column
    code, output = run(url, "get", "checkout-v2")
    assert json.loads(output)["rollout_percent"] == 25.0
    code, output = run(url, "kill", "--reason", "drill", "--yes")
    assert code == 0 and "1 flag(s) changed" in output
    code, output = run(url, "restore")
    assert code == 0 and "restored 1" in output


def test_errors_are_readable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    code, output = run(url, "enable", "missing")
    assert code == 1 and "no flag named 'missing'" in output
    run(url, "create", "f")
    code, output = run(url, "rollout", "f", "150%")
    assert code == 2 and "between 0% and 100%" in output
    code, output = run(url, "create", "f")
    assert code == 2 and "exists" in output
    assert "Traceback" not in output


def test_import_and_export_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
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
    url = f"sqlite:///{tmp_path / 'v.db'}"
    run(url, "create", "f")
    read = json.loads(run(url, "get", "f")[1])["version"]
    assert run(url, "enable", "f", "--if-version", str(read))[0] == 0
    code, output = run(url, "rollout", "f", "10%", "--if-version", str(read))
    assert code == 3 and "changed since it was read" in output
    assert json.loads(run(url, "get", "f")[1])["rollout_percent"] == 100.0


def test_lookalike_names_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    for name in ("pay\u202ement", "cafe\u0301", "zero\u200bwidth", "ｆｌａｇ"):
        code, output = run(url, "create", name)
        assert code == 2 and "is not allowed" in output, output
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"features": [{"name": "caf\u00e9"}]}))
    code, output = run(url, "import", str(state))
    assert code == 2 and "features[0].name" in output
