"""The core imports without the server stack; a missing extra names what to install.

Each check runs in a fresh interpreter, because this one has long since imported everything.
Blocking a package (a meta path finder that refuses it) stands in for an environment where
the extra is not installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SERVER_STACK = (
    "fastapi",
    "starlette",
    "uvicorn",
    "typer",
    "alembic",
    "jinja2",
    "sqlalchemy",
    "pydantic",
)

#: What each library slice may honestly load: outbox staging writes through SQLAlchemy.
ALLOWED = {
    "safeship": (),
    "safeship.resilience": (),
    "safeship.flags": (),
    "safeship.observe": (),
    "safeship.web": (),
    "safeship.outbox": ("sqlalchemy",),
    "safeship.jobs": ("sqlalchemy",),  # enqueueing writes through SQLAlchemy
    "safeship.db": ("sqlalchemy",),
    "safeship.idempotency": ("sqlalchemy",),  # the SQL store and the in-transaction claim
    "safeship.data": ("sqlalchemy",),  # batch writes and the N+1 detector work on SQLAlchemy
    "safeship.flags.live": ("sqlalchemy",),  # the live client reads safeship's flag tables
    "safeship.cache": (),  # SQLAlchemy only when an after-commit hook is installed
}

BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(",")) - {""}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _python(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def _loaded_after_import(module: str) -> list[str]:
    code = (
        f"import json, {module}\n"
        f"print(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    top_level: list[str] = json.loads(result.stdout)
    return top_level


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_library_slices_import_without_the_server_stack(module: str) -> None:
    loaded = set(_loaded_after_import(module))
    heavy = sorted(loaded & set(SERVER_STACK) - set(ALLOWED[module]))
    assert heavy == [], f"import {module} loads {heavy}"


def test_resilience_and_flag_evaluation_work_with_the_server_stack_absent() -> None:
    code = """
from safeship import Breaker, Retry
from safeship.flags import FlagSet
from safeship.observe import PiiMasker
from safeship.resilience import Constant

attempts = []
def flaky():
    attempts.append(1)
    if len(attempts) < 3:
        raise ConnectionError("down")
    return "ok"
assert Retry(attempts=3, schedule=Constant(delay_seconds=0))(flaky)() == "ok"
breaker = Breaker("light-core", registry=None)
assert breaker(lambda: 2)() == 2
assert PiiMasker().mask_text("mail jane@example.com") == "mail ***"
flags = FlagSet.from_unleash({"version": 1, "features": [
    {"name": "f", "enabled": True, "strategies": [{"name": "default"}]}]})
assert flags.is_enabled("f", {})
print("ok")
"""
    result = _python(code, blocked=SERVER_STACK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("statement", "blocked", "extra"),
    [
        ("import safeship.server", ("fastapi",), "server"),
        ("import safeship.settings", ("pydantic",), "server"),
        ("from safeship import Settings", ("pydantic_settings",), "server"),
        ("import safeship.db", ("sqlalchemy",), "db"),
        ("import safeship.outbox", ("sqlalchemy",), "db"),
        ("from safeship.db import upgrade", ("alembic",), "db"),
        ("import safeship.cli", ("typer",), "cli"),
        ("from safeship import FlagStore", ("sqlalchemy",), "db"),
    ],
)
def test_a_missing_extra_says_what_to_install(
    statement: str, blocked: tuple[str, ...], extra: str
) -> None:
    code = f"""
from safeship import SafeshipError
try:
    {statement}
except ImportError as exc:
    assert isinstance(exc, SafeshipError), type(exc)
    print(exc)
else:
    raise SystemExit("imported although {blocked} is missing")
"""
    result = _python(code, blocked=blocked)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'safeship[{extra}]'" in result.stdout
    assert repr(blocked[0]) in result.stdout


def test_the_command_without_the_cli_extra_prints_the_install_line() -> None:
    code = (
        "import sys; sys.argv = ['safeship', '--help']\nfrom safeship.cli_entry import main\nmain()"
    )
    result = _python(code, blocked=("typer",))
    assert result.returncode == 1
    assert "pip install 'safeship[cli]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_library_does_not_know_the_test_suites_variables() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "src" / "safeship").rglob("*.py"))
    assert re.findall(r"SAFESHIP_TEST\w*|\w*REQUIRE_SERVICES", sources) == []


def test_the_test_suites_switch_is_an_unknown_setting_to_safeship() -> None:
    from safeship.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="SAFESHIP_REQUIRE_SERVICES"):
        load_settings({"SAFESHIP_REQUIRE_SERVICES": "1"})
