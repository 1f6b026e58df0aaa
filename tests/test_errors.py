"""Every error class safeship defines derives from the one root, ``SafeshipError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import safeship
from safeship import SafeshipError

# Modules that need an optional integration or start a process on import are skipped only
# when that integration is missing; the rest of the package is walked.
_OPTIONAL = ("safeship.demo", "safeship.cli", "safeship.cli_entry")


def _modules() -> list[object]:
    found: list[object] = []
    for info in pkgutil.walk_packages(safeship.__path__, prefix="safeship."):
        if info.name.startswith(_OPTIONAL) or ".migrations" in info.name:
            continue
        try:
            found.append(importlib.import_module(info.name))
        except ImportError:  # an optional extra that is not installed
            continue
    return found


def test_every_error_class_of_the_package_derives_from_safeship_error() -> None:
    strays = []
    for module in _modules():
        for name, value in vars(module).items():
            if not inspect.isclass(value) or not issubclass(value, BaseException):
                continue
            if not value.__module__.startswith("safeship.") or name.startswith("_"):
                continue
            if not issubclass(value, SafeshipError):
                strays.append(f"{value.__module__}.{name}")
    assert sorted(set(strays)) == []


def test_old_built_in_bases_are_kept_for_callers_that_catch_them() -> None:
    from safeship.flags.store import FlagExistsError, FlagNotFoundError
    from safeship.outbox._model import OutboxPayloadError

    assert issubclass(FlagNotFoundError, KeyError)
    assert issubclass(FlagExistsError, ValueError)
    assert issubclass(OutboxPayloadError, ValueError)
