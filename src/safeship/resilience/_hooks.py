"""Run code the user handed a policy (a predicate, a listener) without letting it wedge one.

A hook that raises is logged once per failure as ``resilience.hook_failed`` (with the
traceback, the policy and the hook's name) and answers ``default``: the policy then goes
on as if the hook had said that, so a permit or slot taken for the call is always given
back and the caller still gets the call's own result or exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from safeship.resilience._log import logger

T = TypeVar("T")


def run_hook(policy: str, hook: str, fn: Callable[..., T], default: T, *args: object) -> T:
    """``fn(*args)``, or ``default`` (logged) when it raises an ``Exception``."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a faulty hook must never fail or wedge the call
        logger.exception(
            "resilience.hook_failed", extra={"policy": policy, "hook": hook, "callable": repr(fn)}
        )
        return default
