"""An OpenFeature provider over safeship flags (extra ``openfeature``).

    from openfeature import api
    from safeship.flags.openfeature import SafeshipProvider

    api.set_provider(SafeshipProvider(flags))          # a FlagSet, or a live client
    client = api.get_client()
    client.get_boolean_value("checkout-v2", False, EvaluationContext("user-42"))

Booleans are ``is_enabled``; strings, numbers and objects come from the flag's variant:
its payload (``string``/``csv`` text, ``number``, ``json``), or its name for a string flag
whose variant has no payload. A flag that is off answers the default with reason
``DISABLED``; a flag that is on without a variant, the default with reason ``DEFAULT``.
Errors map to OpenFeature codes: an unknown flag is ``FLAG_NOT_FOUND``, a payload of the
wrong kind ``TYPE_MISMATCH``, a payload that does not parse ``PARSE_ERROR``, anything else
``GENERAL``; the caller then gets its default.

The context's ``targeting_key`` is the ``userId``; its attributes are the other fields,
standard (``sessionId``, ``environment``, ``currentTime``...) or custom (``tenant``...).

The OpenFeature client calls ``get_metadata()`` on every evaluation and passes
``flag_key``, ``default_value`` and ``evaluation_context`` by keyword; the metadata is one
cached object and successful boolean and text answers are cached per variant, so the
provider adds little to the client's own cost. ``FlagSet.is_enabled`` stays the fast path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from safeship.flags._context import STANDARD_FIELDS
from safeship.flags._model import FlagSource, FrozenDict, Variant
from safeship.flags._values import parse_number

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
    from openfeature.provider import AbstractProvider, Metadata
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "safeship.flags.openfeature needs the OpenFeature SDK: pip install safeship[openfeature]"
    ) from exc

__all__ = ["SafeshipProvider"]

_T = TypeVar("_T")
_NO_METADATA: Mapping[str, Any] = FrozenDict()
_UNKNOWN: Any = object()
_CACHE_LIMIT = 1024


class _PayloadError(Exception):
    """A payload of the wrong kind (``TYPE_MISMATCH``) or unparsable (``PARSE_ERROR``)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class SafeshipProvider(AbstractProvider):
    """OpenFeature provider for a ``FlagSet`` or any ``FlagSource`` (a live client, say)."""

    def __init__(self, flags: FlagSource, *, name: str = "safeship") -> None:
        super().__init__()
        self._flags = flags
        self._metadata = Metadata(name=name)
        self._answers: dict[str, dict[int, tuple[Variant, FlagResolutionDetails[Any]]]] = {
            kind: {} for kind in ("string", "integer", "float")
        }
        self._booleans = {
            value: FlagResolutionDetails(
                value=value, reason=Reason.TARGETING_MATCH, flag_metadata=_NO_METADATA
            )
            for value in (True, False)
        }

    @property
    def flags(self) -> FlagSource:
        """What this provider evaluates."""
        return self._flags

    def get_metadata(self) -> Metadata:
        """The provider's metadata (one object, created once)."""
        return self._metadata

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Whether the flag is on for the context."""
        flags = self._flags
        try:
            enabled = flags.is_enabled(flag_key, _unleash_context(evaluation_context), _UNKNOWN)
            if enabled is _UNKNOWN:  # an unknown flag, or one whose evaluation failed
                return self._missing(flag_key, default_value)
        except Exception as exc:  # noqa: BLE001 - the client answers its default for GENERAL
            return _error(ErrorCode.GENERAL, str(exc), default_value)
        return self._booleans[enabled is True]

    def _missing(self, flag_key: str, default_value: _T) -> FlagResolutionDetails[_T]:
        if flag_key in self._flags:
            return _error(ErrorCode.GENERAL, f"flag {flag_key!r} failed to evaluate", default_value)
        return _not_found(flag_key, default_value)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """The variant's payload text, or its name when it has no payload."""
        return self._resolve(flag_key, default_value, evaluation_context, "string", _as_string)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """The variant's ``number`` payload, which must be a whole number."""
        return self._resolve(flag_key, default_value, evaluation_context, "integer", _as_integer)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """The variant's ``number`` payload."""
        return self._resolve(flag_key, default_value, evaluation_context, "float", _as_float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """The variant's ``json`` payload (an object or list), or ``csv`` as a list of text."""
        return self._resolve(flag_key, default_value, evaluation_context, None, _as_object)

    def _resolve(
        self,
        flag_key: str,
        default_value: _T,
        evaluation_context: EvaluationContext | None,
        cache_as: str | None,
        convert: Callable[[Variant], _T],
    ) -> FlagResolutionDetails[_T]:
        try:
            variant = self._flags.variant(flag_key, _unleash_context(evaluation_context))
            if not variant.enabled:
                return self._not_enabled(flag_key, variant, default_value)
            if cache_as is None:
                return _split(convert(variant), variant)
            return self._cached(variant, cache_as, convert)
        except _PayloadError as mismatch:
            return _error(mismatch.code, f"flag {flag_key!r}: {mismatch}", default_value)
        except Exception as exc:  # noqa: BLE001 - the client answers its default for GENERAL
            return _error(ErrorCode.GENERAL, str(exc), default_value)

    def _not_enabled(
        self, flag_key: str, variant: Variant, default_value: _T
    ) -> FlagResolutionDetails[_T]:
        if variant.feature_enabled:
            return FlagResolutionDetails(value=default_value, reason=Reason.DEFAULT)
        if flag_key not in self._flags:
            return _not_found(flag_key, default_value)
        return FlagResolutionDetails(value=default_value, reason=Reason.DISABLED)

    def _cached(
        self, variant: Variant, kind: str, convert: Callable[[Variant], _T]
    ) -> FlagResolutionDetails[_T]:
        """The answer for a variant, converted once (variants are immutable and shared)."""
        answers = self._answers[kind]
        entry = answers.get(id(variant))
        if entry is not None and entry[0] is variant:
            return entry[1]
        details = _split(convert(variant), variant)
        if len(answers) >= _CACHE_LIMIT:
            answers.clear()  # snapshots come and go; keep the cache bounded
        answers[id(variant)] = (variant, details)  # holding the variant keeps its id unique
        return details


def _split(value: _T, variant: Variant) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(
        value=value, reason=Reason.SPLIT, variant=variant.name, flag_metadata=_NO_METADATA
    )


def _not_found(flag_key: str, default_value: _T) -> FlagResolutionDetails[_T]:
    return _error(ErrorCode.FLAG_NOT_FOUND, f"flag {flag_key!r} does not exist", default_value)


def _error(code: ErrorCode, message: str, default_value: _T) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(
        value=default_value, reason=Reason.ERROR, error_code=code, error_message=message
    )


def _unleash_context(context: EvaluationContext | None) -> dict[str, Any] | None:
    """OpenFeature's context as Unleash's: ``targeting_key`` is the ``userId``.

    The attributes become ``properties`` as they are, without copying: evaluation looks a
    field up at the top level, then in ``properties``, so ``environment`` and the other
    standard fields are found there too. A nested ``properties`` attribute is merged in.
    """
    if context is None:
        return None
    targeting_key, attributes = context.targeting_key, context.attributes
    if not attributes:
        return None if targeting_key is None else {"userId": targeting_key}
    if "properties" not in attributes:
        if targeting_key is None:
            return {"properties": attributes}
        return {"userId": targeting_key, "properties": attributes}
    result: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in STANDARD_FIELDS:
            result[key] = value
        elif key == "properties" and isinstance(value, Mapping):
            properties.update(value)
        else:
            properties[key] = value
    if targeting_key is not None:
        result.setdefault("userId", targeting_key)
    if properties:
        result["properties"] = properties
    return result


def _payload(variant: Variant, kinds: tuple[str, ...], wanted: str) -> str:
    payload = variant.payload
    if payload is None or payload["type"] not in kinds:
        found = "no payload" if payload is None else f"a {payload['type']!r} payload"
        raise _PayloadError(
            ErrorCode.TYPE_MISMATCH, f"variant {variant.name!r} has {found}, not {wanted}"
        )
    return str(payload["value"])


def _as_string(variant: Variant) -> str:
    if variant.payload is None:
        return variant.name
    return str(variant.payload["value"])


def _as_float(variant: Variant) -> float:
    text = _payload(variant, ("number",), "a number")
    number = parse_number(text)
    if number is None:
        raise _PayloadError(ErrorCode.PARSE_ERROR, f"{text!r} is not a number")
    return number


def _as_integer(variant: Variant) -> int:
    number = _as_float(variant)
    if not number.is_integer():
        raise _PayloadError(ErrorCode.TYPE_MISMATCH, f"{number!r} is not a whole number")
    return int(number)


def _as_object(variant: Variant) -> Sequence[FlagValueType] | Mapping[str, FlagValueType]:
    text = _payload(variant, ("json", "csv"), "an object")
    if variant.payload is not None and variant.payload["type"] == "csv":
        return [item.strip() for item in text.split(",")]
    try:
        value = json.loads(text)
    except ValueError:
        raise _PayloadError(ErrorCode.PARSE_ERROR, f"{text!r} is not valid JSON") from None
    if not isinstance(value, dict | list):
        raise _PayloadError(ErrorCode.TYPE_MISMATCH, "the JSON payload is not an object or a list")
    return value
