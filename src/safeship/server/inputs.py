"""Strict, bounded input types shared by every route of the control plane's API.

Request models derive from ``Body`` and use these types, so every route refuses the same
odd values with a 422 naming the field, before any of them reaches a store:

- no coercion: ``false`` is not ``0``, ``"5"`` is not ``5``, ``5`` is not ``"5"``;
- numbers are finite and bounded; whole numbers fit the database's columns;
- text has a length bound and no NUL or unpaired surrogate (PostgreSQL stores neither);
- date-times carry a zone and stay in range once converted to UTC (year 1 at +14:00
  does not);
- JSON objects are nested at most ``MAX_JSON_DEPTH`` levels, with storable text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from safeship.errors import SafeshipError

MAX_JSON_DEPTH = 32
MAX_WHOLE = 2**62
"""Larger whole numbers than any column or counter holds (BIGINT is 2**63 - 1)."""


def storable_text(value: str) -> str:
    """``value`` unless it holds a NUL character or an unpaired surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogates (not valid Unicode)") from None
    return value


def _utc_representable(moment: datetime) -> datetime:
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range once converted to UTC (years 1-9999)") from None
    return moment


def _text_only(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string such as 2030-01-01T09:00:00Z")
    return value


class NestedValueError(SafeshipError, ValueError):
    """A bad value inside a JSON object: ``path`` says where (``features[0].description``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def _storable_json(value: object, path: str = "", depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise NestedValueError(path, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        if isinstance(value, str):
            storable_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
    except ValueError as exc:
        raise NestedValueError(path, str(exc)) from None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _storable_json(str(key), where, depth)
            _storable_json(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable_json(item, f"{path}[{index}]", depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _storable_json(value)
    return value


Text = Annotated[str, Strict(), AfterValidator(storable_text)]
"""Storable text, never coerced; bound its length with ``Field(max_length=...)``."""

Whole = Annotated[int, Strict(), Field(ge=-MAX_WHOLE, le=MAX_WHOLE)]
"""A whole number (``true`` and ``"5"`` are refused); narrow it with ``Field(ge=, le=)``."""

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite number (whole numbers accepted; ``false`` and ``"5"`` refused)."""

Flag = Annotated[bool, Strict()]
"""``true`` or ``false`` only (not ``1``, not ``"yes"``)."""

UtcDatetime = Annotated[
    datetime, BeforeValidator(_text_only), Field(), AfterValidator(_utc_representable)
]
"""An RFC 3339 date-time, as text, representable in UTC (its zone is checked elsewhere)."""

JsonObject = Annotated[dict[str, Any], Strict(), AfterValidator(_json_object)]
"""A JSON object of storable text, nested at most ``MAX_JSON_DEPTH`` levels."""

Reason = Annotated[Text | None, Field(max_length=2000, description="Why, for the audit trail.")]
"""An optional reason for the audit trail (default it to ``None`` in the model)."""


def clean_param(value: str | None) -> str | None:
    """For path and query parameters: the same text rule as bodies."""
    return None if value is None else storable_text(value)


class Body(BaseModel):
    """Base of every request body: its fields use the strict types above."""

    model_config = ConfigDict(strict=False, str_strip_whitespace=False)
