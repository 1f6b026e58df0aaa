"""Build the wheel, install it alone in a new virtual environment, and run the CLI."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert process.returncode == 0, f"{args}: {process.stdout}\n{process.stderr}"
    return process


def test_wheel_installs_into_a_new_venv_and_the_cli_works(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, ROOT)
    wheel = next(dist.glob("safeship-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel)

    version = _run(
        bin_dir / "python", "-c", "import safeship; print(safeship.__version__)", cwd=tmp_path
    )
    assert version.stdout.strip()
    help_text = _run(bin_dir / "safeship", "--help", cwd=tmp_path).stdout
    assert "demo" in help_text and "serve" in help_text and "check" in help_text
    for command in ("demo", "serve"):
        _run(bin_dir / "safeship", command, "--help", cwd=tmp_path)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    _run(bin_dir / "safeship", "db", "upgrade", cwd=tmp_path, env=env)
    checked = _run(bin_dir / "safeship", "check", cwd=tmp_path, env=env).stdout
    assert "database" in checked and "fail" not in checked
    assert (tmp_path / "safeship.db").exists()

    # Migrations and dashboard templates ship inside the wheel.
    files = _run(
        bin_dir / "python",
        "-c",
        "import safeship, pathlib; p = pathlib.Path(safeship.__file__).parent; "
        "print(*sorted(str(f.relative_to(p)) for f in p.rglob('*') if f.is_file()))",
        cwd=tmp_path,
    ).stdout.split()
    assert "db/migrations/versions/0002_flags.py" in files
    assert "server/templates/overview.html" in files and "py.typed" in files
