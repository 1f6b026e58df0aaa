"""Build the wheel and install it alone in new virtual environments: the core, then the CLI."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

#: Distributions the core must not pull in (they belong to the db, server and cli extras).
SERVER_STACK = {"fastapi", "starlette", "uvicorn", "typer", "alembic", "jinja2", "sqlalchemy"}
SERVER_STACK |= {"pydantic", "rich"}

CORE_USE = """
from safeship import Breaker, Retry
from safeship.resilience import BreakerOpen, ConsecutiveFailures, Constant

calls = []
def flaky():
    calls.append(1)
    if len(calls) < 2:
        raise ConnectionError("down")
    return "ok"
assert Retry(attempts=2, schedule=Constant(delay_seconds=0))(flaky)() == "ok"

breaker = Breaker("fresh", window=ConsecutiveFailures(1), registry=None)
try:
    breaker(lambda: 1 / 0)()
except ZeroDivisionError:
    pass
try:
    breaker(lambda: "never")()
except BreakerOpen:
    print("open")
"""


def _run(
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    expect: int = 0,
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
    assert process.returncode == expect, f"{args}: {process.stdout}\n{process.stderr}"
    return process


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, ROOT)
    return next(dist.glob("safeship-*.whl"))


def _new_venv(path: Path) -> Path:
    venv.create(path, with_pip=False)  # this interpreter's pip installs into it (--python)
    return path / "bin"


def _pip(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "pip", "--python", bin_dir / "python", *args)


def _pip_install(bin_dir: Path, requirement: str) -> None:
    # No bytecode compilation: it is most of an install's time and nothing here needs it.
    _pip(bin_dir, "install", "--quiet", "--no-compile", requirement)


def _installed(bin_dir: Path) -> set[str]:
    listing = _pip(bin_dir, "list", "--format=freeze").stdout
    return {line.split("==")[0].lower().replace("_", "-") for line in listing.split()}


def test_the_core_installs_without_the_server_stack_and_runs_resilience(
    tmp_path: Path, wheel: Path
) -> None:
    bin_dir = _new_venv(tmp_path / "venv")
    _pip_install(bin_dir, str(wheel))

    assert _installed(bin_dir) & SERVER_STACK == set()
    assert _run(bin_dir / "python", "-c", CORE_USE, cwd=tmp_path).stdout.strip() == "open"
    refused = _run(bin_dir / "safeship", "--help", cwd=tmp_path, expect=1)
    assert "pip install 'safeship[cli]'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_cli_extra_installs_the_command_and_its_database(tmp_path: Path, wheel: Path) -> None:
    bin_dir = _new_venv(tmp_path / "venv")
    _pip_install(bin_dir, f"{wheel}[cli]")

    version = _run(
        bin_dir / "python", "-c", "import safeship; print(safeship.__version__)", cwd=tmp_path
    )
    assert version.stdout.strip()
    help_text = _run(bin_dir / "safeship", "--help", cwd=tmp_path).stdout
    assert "demo" in help_text and "serve" in help_text and "check" in help_text
    for command in ("demo", "serve"):
        _run(bin_dir / "safeship", command, "--help", cwd=tmp_path)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    _run(bin_dir / "safeship", "db", "upgrade", "--create", cwd=tmp_path, env=env)
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
