"""The evaluation context: who is asking, as a mapping with Unleash's keys or a ``Context``.

Evaluation reads a context through ``context.get(key)`` only, so a plain ``dict`` with
Unleash's keys (``userId``, ``sessionId``, ``remoteAddress``, ``environment``, ``appName``,
``currentTime``, ``properties``) is the fastest thing to pass. ``Context`` is the typed,
frozen alternative; it is also a read-only mapping with those same keys.

A field that is not at the top level is looked up in ``properties``, the way Unleash does
(so ``{"properties": {"userId": "7"}}`` has a user id). Values that are not strings are
compared as the strings other SDKs would see: ``True`` is ``"true"``, ``7`` is ``"7"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from safeship.flags._model import FrozenDict

ContextLike: TypeAlias = Mapping[str, Any]
"""A ``dict`` with Unleash's context keys, or a ``Context``."""

STANDARD_FIELDS = (
    "userId",
    "sessionId",
    "remoteAddress",
    "environment",
    "appName",
    "currentTime",
)

EMPTY: Mapping[str, Any] = FrozenDict()


@dataclass(frozen=True, slots=True, kw_only=True)
class Context(Mapping[str, Any]):
    """A typed evaluation context; ``properties`` holds custom fields (``tenant``, ``plan``...).

    >>> Context(user_id="42", properties={"plan": "pro"})["userId"]
    '42'
    """

    user_id: str | None = None
    session_id: str | None = None
    remote_address: str | None = None
    environment: str | None = None
    app_name: str | None = None
    current_time: datetime | str | None = None
    properties: Mapping[str, Any] = field(default_factory=FrozenDict)
    _fields: FrozenDict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        properties = FrozenDict(self.properties)
        object.__setattr__(self, "properties", properties)  # frozen: set once, here
        values = (
            self.user_id,
            self.session_id,
            self.remote_address,
            self.environment,
            self.app_name,
            self.current_time,
        )
        pairs = zip(STANDARD_FIELDS, values, strict=True)
        fields: dict[str, Any] = {key: value for key, value in pairs if value is not None}
        if properties:
            fields["properties"] = properties
        object.__setattr__(self, "_fields", FrozenDict(fields))

    @classmethod
    def from_unleash(cls, context: Mapping[str, Any]) -> Context:
        """A ``Context`` from a dict with Unleash's keys; unknown top-level keys join properties."""
        properties = dict(context.get("properties") or {})
        for key, value in context.items():
            if key not in STANDARD_FIELDS and key != "properties":
                properties[key] = value
        return cls(
            user_id=context.get("userId"),
            session_id=context.get("sessionId"),
            remote_address=context.get("remoteAddress"),
            environment=context.get("environment"),
            app_name=context.get("appName"),
            current_time=context.get("currentTime"),
            properties=properties,
        )

    def to_unleash(self) -> dict[str, Any]:
        """This context as a plain ``dict`` with Unleash's keys."""
        result = dict(self._fields)
        if "properties" in result:
            result["properties"] = dict(self.properties)
        return result

    def get(self, key: str, default: Any = None) -> Any:
        """The value under an Unleash key (``userId``, ``properties``...), or ``default``."""
        return self._fields.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __hash__(self) -> int:
        return hash(self._fields)


def as_text(value: object) -> str:
    """A non-string context value as the text other SDKs would compare.

    ``True`` is ``"true"``, numbers are their decimal text and a ``datetime`` is its
    ISO 8601 text (a naive one has no offset, so date rules will not accept it).
    """
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def read(context: Mapping[str, Any], name: str) -> Any:
    """The value of a context field (top level first, then ``properties``), or ``None``.

    Used where speed does not matter; the compiled evaluators inline the same steps.
    """
    value = context.get(name)
    if value is None:
        properties = context.get("properties")
        if not properties:
            return None
        value = properties.get(name)
        if value is None:
            return None
    if value.__class__ is not str:
        value = as_text(value)
    return value
