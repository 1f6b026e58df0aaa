"""Forcing flag values in tests, without a store: both branches of your code, on demand.

``fixed_flags`` builds a real ``FlagSet`` from plain values::

    flags = fixed_flags({"checkout-v2": True, "button-color": "blue"})
    flags.is_enabled("checkout-v2")              # True, for every context
    flags.variant("button-color").name           # "blue"

A value is ``True``/``False`` (on/off), a variant name (the flag is on and gives that
variant, without payload), a ``Variant`` (with its payload), or a feature object in
Unleash's format for anything finer. With ``base=`` the forced flags replace those of an
existing snapshot and every other flag keeps its real rules.

``force_flags`` is the context manager: it swaps the snapshot your code reads (an
attribute of a module or object, ``flags`` by default) for one with forced values, and puts
the original back on exit::

    with force_flags(myapp.features, {"checkout-v2": False}):
        assert checkout(cart).path == "legacy"

Under pytest, the ``forced_flags`` fixture does the same and undoes it after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeAlias

from safeship.flags._flagset import FlagSet
from safeship.flags._model import FlagStateError, Variant

FlagValue: TypeAlias = bool | str | Variant | Mapping[str, Any]
"""On/off, a variant name, a ``Variant``, or a whole feature object (Unleash format)."""

__all__ = ["FlagValue", "fixed_flags", "force_flags"]


def fixed_flags(
    values: Mapping[str, FlagValue] | None = None,
    /,
    *,
    base: FlagSet | None = None,
    **named: FlagValue,
) -> FlagSet:
    """A ``FlagSet`` whose flags give fixed answers (over ``base``'s other flags, if given).

    Keyword arguments work for names that are identifiers:
    ``fixed_flags(checkout_v2=True)`` forces ``checkout_v2``.
    """
    forced = {**(values or {}), **named}
    state: dict[str, Any] = {"version": 1, "features": []}
    if base is not None:
        state = base.to_unleash()
    kept = [feature for feature in state.get("features", []) if feature.get("name") not in forced]
    state["features"] = kept + [_feature(name, value) for name, value in forced.items()]
    flags = FlagSet.from_unleash(state, counter=base.counter if base is not None else None)
    problems = [problem for name in forced for problem in flags.problems.get(name, ())]
    if problems:
        raise FlagStateError.from_problems(problems)
    return flags


def _feature(name: str, value: FlagValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"name": name, "enabled": value, "strategies": []}
    if isinstance(value, str):
        return {"name": name, "enabled": True, "strategies": [], "variants": [_one(value, None)]}
    if isinstance(value, Variant):
        variants = [_one(value.name, value.payload)] if value.enabled else []
        return {
            "name": name,
            "enabled": value.feature_enabled or value.enabled,
            "strategies": [],
            "variants": variants,
        }
    if isinstance(value, Mapping):
        return {**value, "name": name}
    raise TypeError(
        f"flag {name!r}: force it with True/False, a variant name, a Variant or a feature "
        f"object, not {type(value).__name__}"
    )


def _one(name: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    variant: dict[str, Any] = {"name": name, "weight": 1000}
    if payload is not None:
        variant["payload"] = dict(payload)
    return variant


@contextmanager
def force_flags(
    target: object, values: Mapping[str, FlagValue], /, *, attribute: str = "flags"
) -> Iterator[FlagSet]:
    """Swap ``target.<attribute>`` for a snapshot with ``values`` forced; restore on exit.

    When the attribute holds a ``FlagSet``, its other flags keep working; otherwise (absent,
    or something else) the forced flags are the only ones. Yields the forced snapshot.
    """
    missing = object()
    original = getattr(target, attribute, missing)
    base = original if isinstance(original, FlagSet) else None
    forced = fixed_flags(values, base=base)
    setattr(target, attribute, forced)
    try:
        yield forced
    finally:
        if original is missing:
            delattr(target, attribute)
        else:
            setattr(target, attribute, original)


try:
    import pytest
except ImportError:  # pragma: no cover - the fixture needs pytest, the helpers do not
    pass
else:

    @pytest.fixture
    def forced_flags(
        monkeypatch: pytest.MonkeyPatch,
    ) -> Callable[..., FlagSet]:
        """``forced_flags(target, values, attribute="flags")``, undone after the test.

        Register it with ``pytest_plugins = ["safeship.flags.testing"]`` in ``conftest.py``
        (or import it there).
        """

        def force(
            target: object, values: Mapping[str, FlagValue], /, *, attribute: str = "flags"
        ) -> FlagSet:
            current = getattr(target, attribute, None)
            forced = fixed_flags(values, base=current if isinstance(current, FlagSet) else None)
            monkeypatch.setattr(target, attribute, forced, raising=False)
            return forced

        return force

    __all__ += ["forced_flags"]
