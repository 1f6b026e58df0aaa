"""Value objects of flag evaluation: variants, payloads, problems and the errors of compilation.

Everything here is immutable, so a compiled snapshot can hand the same objects to every
thread and event loop without copying them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, runtime_checkable

from safeship.errors import SafeshipError

DISABLED = "disabled"
"""The name of the variant returned when a flag is off or has no variant to give."""


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses changes: shared safely by every caller of a snapshot.

    It stays a real ``dict`` (``isinstance``, ``==`` and ``json.dumps`` work as usual);
    ``dict(payload)`` gives a mutable copy.
    """

    __slots__ = ()

    def _readonly(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("flag values are read-only; copy with dict(value) to change one")

    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True, slots=True)
class Variant:
    """The variant a flag gives for one context.

    ``enabled`` says whether a real variant was chosen; ``feature_enabled`` whether the flag
    itself is on. A flag that is off, or on without variants, gives the variant named
    ``"disabled"`` with ``enabled=False``. ``payload`` is ``{"type": ..., "value": ...}``
    (types ``string``, ``json``, ``csv``, ``number``) or ``None``.
    """

    name: str
    enabled: bool
    feature_enabled: bool = False
    payload: FrozenDict | None = None

    def to_unleash(self) -> dict[str, Any]:
        """This variant as other Unleash SDKs return it (with ``featureEnabled``)."""
        result: dict[str, Any] = {
            "name": self.name,
            "enabled": self.enabled,
            "featureEnabled": self.feature_enabled,
        }
        if self.payload is not None:
            result["payload"] = dict(self.payload)
        return result


DISABLED_VARIANT = Variant(DISABLED, enabled=False, feature_enabled=False)
"""What ``variant()`` gives for an unknown flag or a flag that is off."""

NO_VARIANT = Variant(DISABLED, enabled=False, feature_enabled=True)
"""What ``variant()`` gives for a flag that is on but has no variant to hand out."""


def make_payload(raw: object) -> FrozenDict | None:
    """Freeze a payload ``{"type", "value"}``; ``None`` stays ``None``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str) or "value" not in raw:
        raise TypeError("a payload is an object with a string 'type' and a 'value'")
    value = raw["value"]
    if not isinstance(value, str):
        import json

        value = json.dumps(value, separators=(",", ":"))
    return FrozenDict(type=raw["type"], value=value)


@dataclass(frozen=True, slots=True)
class FlagProblem:
    """A rule that could not be compiled as written, and what safeship did instead.

    ``field`` is a path inside the feature (``strategies[0].constraints[1].value``);
    ``effect`` is ``"off"`` when the rule now never matches and ``"ignored"`` when only
    the bad entry was skipped (an unparsable IP in a list, for instance).
    """

    flag: str
    field: str
    message: str
    effect: str = "off"

    def __str__(self) -> str:
        return f"{self.field}: {self.message} ({self.effect})"


class FlagStateError(SafeshipError, ValueError):
    """A flag state safeship cannot compile: names the flag and field, and what is allowed."""

    def __init__(self, message: str, *, flag: str | None = None, field: str | None = None):
        where = " ".join(part for part in (_quoted(flag), field) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.flag = flag
        self.field = field

    @classmethod
    def from_problems(cls, problems: Iterable[FlagProblem]) -> FlagStateError:
        """One error for the first problem (strict compilation stops at the first)."""
        first = next(iter(problems))
        return cls(first.message, flag=first.flag, field=first.field)


def _quoted(flag: str | None) -> str:
    return f"flag {flag!r}" if flag is not None else ""


@runtime_checkable
class FlagSource(Protocol):
    """What evaluates flags: a ``FlagSet``, or a live client holding the current one."""

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        """Whether the flag is on for this context (``default`` for an unknown flag)."""

    def variant(self, name: str, context: Any = None) -> Variant:
        """The variant of the flag for this context."""

    def __contains__(self, name: object) -> bool:
        """Whether the flag exists."""
