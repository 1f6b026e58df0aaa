"""Constraints: one context field compared with pre-parsed values by an operator.

A constraint compiles to a ``Constraint`` entry: the field, a ``test`` on the field's text,
the answer when the field is absent, and whether the answer is inverted. Rule values
(numbers, dates, versions, patterns, IP ranges) are parsed here, once; a value that cannot
be parsed raises ``RuleError`` and the strategy holding it never matches.

Semantics follow Unleash: an absent field fails every operator except ``NOT_IN`` (and
``currentTime`` defaults to now), ``inverted`` flips the answer after that, and
``caseInsensitive`` applies to the ``STR_*`` operators and ``REGEX`` only: ``IN`` and
``NOT_IN`` always compare exactly, as Unleash's engines and its admin UI do.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from safeship.errors import SafeshipError
from safeship.flags._context import as_text
from safeship.flags._patterns import PatternError, compile_pattern
from safeship.flags._values import (
    in_networks,
    parse_ip,
    parse_network,
    parse_number,
    parse_semver,
    parse_timestamp,
)

Test = Callable[[Any], bool]
Check = Callable[[Mapping[str, Any]], bool]


class RuleError(SafeshipError):
    """A rule that cannot be compiled as written; ``field`` is relative to the rule."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Constraint(NamedTuple):
    """A compiled constraint, evaluated as ``test(text)`` (inverted if ``inverted``).

    ``if_missing`` is the answer when the field is absent (``None``: call ``test(None)``).
    ``inline`` lets generated code skip the call for the common operators: ``("in",
    members)``, ``("not_in", members)``, ``("startswith", needles)``, ``("endswith",
    needles)`` or ``("contains", needle)``, with ``lower`` when the text is lowercased first.
    """

    field: str
    test: Test
    if_missing: bool | None
    inverted: bool
    inline: tuple[str, Any] | None = None
    lower: bool = False


_COMPARE = {
    "EQ": operator.eq,
    "GT": operator.gt,
    "GTE": operator.ge,
    "LT": operator.lt,
    "LTE": operator.le,
}

Ignored = list[tuple[str, str]]
"""Entries skipped while compiling (``(field, message)``), reported without disabling the rule."""


def compile_constraint(raw: object, now: Callable[[], float], ignored: Ignored) -> Constraint:
    """Compile one constraint object; raises ``RuleError`` when it cannot be evaluated."""
    if not isinstance(raw, Mapping):
        raise RuleError("", "a constraint is an object with contextName, operator and values")
    field = raw.get("contextName")
    if not isinstance(field, str) or not field:
        raise RuleError("contextName", "must be a non-empty string")
    op = raw.get("operator")
    if not isinstance(op, str):
        raise RuleError("operator", "must be a string such as 'IN' or 'STR_CONTAINS'")
    ignore_case = _ignores_case(op, raw)
    if_missing: bool | None = op == "NOT_IN"
    test = _operator_test(op, raw, ignore_case, ignored, now)
    if op.startswith("DATE_") and field == "currentTime":
        if_missing = None
    inverted = bool(raw.get("inverted", False))
    return Constraint(field, test, if_missing, inverted, _inline(op, raw), ignore_case)


def _ignores_case(op: str, raw: Mapping[str, Any]) -> bool:
    """``caseInsensitive`` as Unleash reads it: never for ``IN``/``NOT_IN``."""
    return op not in ("IN", "NOT_IN") and bool(raw.get("caseInsensitive", False))


def _inline(op: str, raw: Mapping[str, Any]) -> tuple[str, Any] | None:
    """What generated code needs to evaluate the operator without calling ``test``."""
    ignore_case = _ignores_case(op, raw)
    if op in ("IN", "NOT_IN", "STR_STARTS_WITH", "STR_ENDS_WITH", "STR_CONTAINS"):
        values = _texts(raw, "values")
        if ignore_case:
            values = tuple(value.lower() for value in values)
        if op in ("IN", "NOT_IN"):
            return op.lower(), frozenset(values)
        if op == "STR_CONTAINS":
            return ("contains", values[0]) if len(values) == 1 else None
        return op[4:].replace("_", "").lower(), values
    return None


def _operator_test(
    op: str, raw: Mapping[str, Any], ignore_case: bool, ignored: Ignored, now: Callable[[], float]
) -> Test:
    kind, _, comparison = op.partition("_")
    if op in ("IN", "NOT_IN"):
        return _membership(_texts(raw, "values"), negate=op == "NOT_IN")
    if kind == "STR" and comparison in ("CONTAINS", "STARTS_WITH", "ENDS_WITH"):
        return _string(comparison, _texts(raw, "values"), ignore_case)
    if kind == "NUM" and comparison in _COMPARE:
        return _number(_COMPARE[comparison], _single(raw))
    if kind == "DATE" and comparison in ("AFTER", "BEFORE"):
        return _date(operator.gt if comparison == "AFTER" else operator.lt, _single(raw), now)
    if kind == "SEMVER" and comparison in _COMPARE:
        return _semver(_COMPARE[comparison], _single(raw))
    if op == "REGEX":
        return _regex(raw, ignore_case)
    if op == "IN_CIDR":
        return _cidr(_texts(raw, "values"), ignored)
    raise RuleError("operator", f"unknown operator {op!r}")


def _texts(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = raw.get(key, [])
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise RuleError(key, "must be a list of strings")
    return tuple(value if isinstance(value, str) else as_text(value) for value in values)


def _single(raw: Mapping[str, Any]) -> Any:
    value = raw.get("value")
    if value is None:
        raise RuleError("value", "this operator compares with one 'value', which is missing")
    return value.strip() if isinstance(value, str) else value


def _membership(values: tuple[str, ...], *, negate: bool) -> Test:
    members = frozenset(values)
    if negate:
        return lambda text: text not in members
    return members.__contains__


def _string(comparison: str, values: tuple[str, ...], ignore_case: bool) -> Test:
    needles = tuple(value.lower() for value in values) if ignore_case else values
    if comparison == "STARTS_WITH":
        if ignore_case:
            return lambda text: text.lower().startswith(needles)
        return lambda text: text.startswith(needles)
    if comparison == "ENDS_WITH":
        if ignore_case:
            return lambda text: text.lower().endswith(needles)
        return lambda text: text.endswith(needles)

    def contains(text: str) -> bool:
        if ignore_case:
            text = text.lower()
        return any(needle in text for needle in needles)

    return contains


def _number(compare: Callable[[float, float], bool], raw_value: Any) -> Test:
    target = parse_number(raw_value)
    if target is None:
        raise RuleError("value", f"{raw_value!r} is not a number")

    def test(text: str) -> bool:
        number = parse_number(text)
        return number is not None and compare(number, target)

    return test


def _date(
    compare: Callable[[float, float], bool], raw_value: Any, now: Callable[[], float]
) -> Test:
    target = parse_timestamp(raw_value)
    if target is None:
        raise RuleError(
            "value", f"{raw_value!r} is not an RFC 3339 date-time (2024-05-01T12:00:00.000Z)"
        )

    def test(text: str | None) -> bool:
        moment = now() if text is None else parse_timestamp(text)
        return moment is not None and compare(moment, target)

    return test


def _semver(compare: Callable[[Any, Any], bool], raw_value: Any) -> Test:
    target = parse_semver(raw_value) if isinstance(raw_value, str) else None
    if target is None:
        raise RuleError("value", f"{raw_value!r} is not a semantic version (1.2.3)")

    def test(text: str) -> bool:
        version = parse_semver(text)
        return version is not None and compare(version, target)

    return test


def _regex(raw: Mapping[str, Any], ignore_case: bool) -> Test:
    value = raw.get("value")
    field, sources = (
        ("value", (value,)) if isinstance(value, str) else ("values", _texts(raw, "values"))
    )
    try:
        patterns = tuple(compile_pattern(source, ignore_case=ignore_case) for source in sources)
    except PatternError as exc:
        raise RuleError(field, str(exc)) from None
    if len(patterns) == 1:
        search = patterns[0].search
        return lambda text: search(text) is not None
    return lambda text: any(pattern.search(text) is not None for pattern in patterns)


def _cidr(values: tuple[str, ...], ignored: Ignored) -> Test:
    networks = []
    for index, value in enumerate(values):
        network = parse_network(value)
        if network is None:
            ignored.append((f"values[{index}]", f"{value!r} is not an IP address or CIDR range"))
        else:
            networks.append(network)
    ranges = tuple(networks)

    def test(text: str) -> bool:
        address = parse_ip(text)
        return address is not None and in_networks(address, ranges)

    return test
