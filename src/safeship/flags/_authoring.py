"""Everyday flag edits as pure functions on an Unleash feature definition.

Each function takes a feature ``dict`` in Unleash's format and returns a new one; nothing
is mutated.  The result stays plain Unleash, so an export evaluates the same in any
Unleash SDK:

- ``rollout``: one ``flexibleRollout`` strategy, sticky on a field;
- ``target``: a strategy whose constraint lists user or tenant ids (strategies are OR-ed,
  so targeted ids are on whatever the rollout says);
- ``schedule``: ``currentTime`` constraints on every strategy (``DATE_AFTER`` /
  ``DATE_BEFORE``), so the window holds without a scheduler process.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from safeship.errors import SafeshipError

ROLLOUT_TITLE = "safeship:rollout"
TARGET_TITLE_PREFIX = "safeship:target:"
MAX_NAME_LENGTH = 200
MAX_TARGETS = 10_000
NAME_CHARACTERS = "A-Z a-z 0-9 - _ . ~ ! * ' ( ) :"
"""What a flag name may hold: Unleash's URL-friendly set plus ``:``, ASCII only."""
_NAME = re.compile(rf"[A-Za-z0-9\-_.~!*'():]{{1,{MAX_NAME_LENGTH}}}")
_NAME_CHAR = re.compile(r"[A-Za-z0-9\-_.~!*'():]")
STICKINESS_FIELDS = ("default", "userId", "sessionId", "random")


class FlagDefinitionError(SafeshipError, ValueError):
    """A flag edit or definition is invalid; the message names the field and what is allowed.

    ``field`` is the path of the bad value (``definition.strategies[0].constraints``,
    ``segments[2].id``); by default the text before the first ``": "`` of the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        if field is None:
            head, sep, rest = message.partition(": ")
            field, message = (head, rest) if sep and " " not in head else ("", message)
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.problem = message


def check_name(name: object) -> str:
    """A flag name as given, or ``FlagDefinitionError`` saying what is wrong with it.

    Names are 1-200 characters of ``NAME_CHARACTERS`` (not ``.`` or ``..``). The set is
    ASCII, so lookalikes cannot be made: an NFC/NFD variant, a bidi override, a zero-width
    or full-width character is refused, never normalised into a second spelling.
    """
    if not isinstance(name, str):
        raise FlagDefinitionError(f"name: must be a string, not {type(name).__name__}")
    if _NAME.fullmatch(name) and name not in (".", ".."):
        return name
    raise FlagDefinitionError(f"name: {_name_problem(name)}")


def _name_problem(name: str) -> str:
    allowed = f"use 1-{MAX_NAME_LENGTH} characters of {NAME_CHARACTERS}"
    if not name:
        return f"is empty; {allowed}"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; {allowed}"
    if name in (".", ".."):
        return f"{name!r} is a path, not a name; {allowed}"
    index, char = next((i, c) for i, c in enumerate(name) if not _NAME_CHAR.fullmatch(c))
    label = unicodedata.name(char, "a control or unassigned character")
    kind = "whitespace character" if char.isspace() else "character"
    problem = f"{kind} U+{ord(char):04X} ({label}) at position {index} is not allowed"
    folded = unicodedata.normalize("NFKC", name)
    if folded != name and _NAME.fullmatch(folded):
        problem += f" (it looks like {folded!r})"
    return f"{problem}; {allowed}"


def new_feature(name: str, *, enabled: bool = False) -> dict[str, Any]:
    """A flag that is on for everyone when enabled (one ``default`` strategy)."""
    return {
        "name": check_name(name),
        "enabled": enabled,
        "strategies": [{"name": "default", "parameters": {}, "constraints": []}],
        "variants": [],
    }


def set_enabled(feature: dict[str, Any], enabled: bool) -> dict[str, Any]:
    updated = copy.deepcopy(feature)
    updated["enabled"] = bool(enabled)
    return updated


def parse_percent(value: str | float | int) -> float:
    """'25', '25%', 25 or 2.5 -> a percentage in [0, 100]; anything else is an error."""
    text = str(value).strip().removesuffix("%").strip()
    try:
        percent = float(text)
    except ValueError:
        raise FlagDefinitionError(f"rollout: {value!r} is not a percentage (e.g. 25%)") from None
    if not 0 <= percent <= 100 or percent != percent:
        raise FlagDefinitionError(f"rollout: {value!r} must be between 0% and 100%")
    return percent


def _schedule_constraints(strategy: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in strategy.get("constraints", []) if c.get("contextName") == "currentTime"]


def _format_percent(percent: float) -> str:
    return str(int(percent)) if percent == int(percent) else str(percent)


def rollout_stickiness(feature: dict[str, Any]) -> str:
    """The stickiness of the flag's gradual rollout strategy, or ``default``."""
    for strategy in feature.get("strategies") or []:
        if isinstance(strategy, dict) and strategy.get("name") == "flexibleRollout":
            value = (strategy.get("parameters") or {}).get("stickiness")
            if isinstance(value, str) and value:
                return value
    return "default"


def rollout(
    feature: dict[str, Any],
    percent: str | float,
    *,
    stickiness: str | None = None,
    group_id: str | None = None,
) -> dict[str, Any]:
    """On for ``percent`` of units, sticky on ``stickiness``; targeted ids stay on.

    Without ``stickiness`` the flag keeps the one its rollout had (``default`` for a flag
    with none), so moving 10% to 100% never reshuffles who is in. Keeping the same
    ``group_id`` (the flag name by default) makes rollouts monotonic: everyone enabled at
    10% stays enabled at 20%.
    """
    value = parse_percent(percent)
    if stickiness is None:
        stickiness = rollout_stickiness(feature)
    if not stickiness or len(stickiness) > 100:
        raise FlagDefinitionError("stickiness: a context field name of 1-100 characters")
    updated = copy.deepcopy(feature)
    strategies = updated.get("strategies") or []
    schedule = _schedule_constraints(strategies[0]) if strategies else []
    kept = [s for s in strategies if str(s.get("title", "")).startswith(TARGET_TITLE_PREFIX)]
    rollout_strategy = {
        "name": "flexibleRollout",
        "title": ROLLOUT_TITLE,
        "parameters": {
            "rollout": _format_percent(value),
            "stickiness": stickiness,
            "groupId": group_id or updated["name"],
        },
        "constraints": copy.deepcopy(schedule),
    }
    updated["strategies"] = [rollout_strategy, *kept]
    return updated


def target(
    feature: dict[str, Any], values: Sequence[str], *, field: str = "userId"
) -> dict[str, Any]:
    """Turn the flag on for exactly these ``field`` values (an empty list removes the target)."""
    if not field or len(field) > 100:
        raise FlagDefinitionError("field: a context field name of 1-100 characters")
    cleaned = sorted({str(v).strip() for v in values if str(v).strip()})
    if len(cleaned) > MAX_TARGETS:
        raise FlagDefinitionError(f"values: at most {MAX_TARGETS} ids per target")
    updated = copy.deepcopy(feature)
    title = TARGET_TITLE_PREFIX + field
    existing = updated.get("strategies") or []
    schedule = _schedule_constraints(existing[0]) if existing else []
    # Targets mean "on for these ids": a catch-all strategy ("on for everyone") would
    # swallow them, so it goes; a rollout strategy stays (rollout OR targets).
    strategies = [s for s in existing if s.get("title") != title and not _catch_all(s)]
    if cleaned:
        strategies.append(
            {
                "name": "default",
                "title": title,
                "parameters": {},
                "constraints": [
                    {
                        "contextName": field,
                        "operator": "IN",
                        "values": cleaned,
                        "inverted": False,
                        "caseInsensitive": False,
                    },
                    *copy.deepcopy(schedule),
                ],
            }
        )
    if not strategies:  # removing the last target leaves the flag on for nobody
        strategies = [
            {
                "name": "flexibleRollout",
                "title": ROLLOUT_TITLE,
                "parameters": {"rollout": "0", "stickiness": "default", "groupId": updated["name"]},
                "constraints": [],
            }
        ]
    updated["strategies"] = strategies
    return updated


def _catch_all(strategy: dict[str, Any]) -> bool:
    """An untitled ``default`` strategy with no rule but the schedule: on for everyone."""
    return (
        strategy.get("name") == "default"
        and not strategy.get("title")
        and not strategy.get("segments")
        and all(c.get("contextName") == "currentTime" for c in strategy.get("constraints", []))
    )


def schedule(
    feature: dict[str, Any],
    *,
    enable_at: datetime | None = None,
    disable_at: datetime | None = None,
) -> dict[str, Any]:
    """Limit the flag to ``[enable_at, disable_at)``; both None removes the schedule."""
    for label, moment in (("enable_at", enable_at), ("disable_at", disable_at)):
        if moment is not None and moment.tzinfo is None:
            raise FlagDefinitionError(f"{label}: give a timezone (e.g. 2026-12-01T09:00:00Z)")
    if enable_at and disable_at and disable_at <= enable_at:
        raise FlagDefinitionError("disable_at: must be after enable_at")
    window = []
    if enable_at is not None:
        window.append(_date_constraint("DATE_AFTER", enable_at))
    if disable_at is not None:
        window.append(_date_constraint("DATE_BEFORE", disable_at))
    updated = copy.deepcopy(feature)
    strategies = updated.get("strategies") or [{"name": "default", "parameters": {}}]
    for strategy in strategies:
        others = [
            c for c in strategy.get("constraints", []) if c.get("contextName") != "currentTime"
        ]
        strategy["constraints"] = others + copy.deepcopy(window)
    updated["strategies"] = strategies
    return updated


def _date_constraint(operator: str, moment: datetime) -> dict[str, Any]:
    stamp = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "contextName": "currentTime",
        "operator": operator,
        "value": stamp,
        "inverted": False,
        "caseInsensitive": False,
    }


_UNREADABLE = (AttributeError, TypeError, KeyError, IndexError, ValueError)
"""What describing a definition stored in an unexpected shape can raise."""


def rollout_percent(feature: dict[str, Any]) -> float | None:
    """The percentage a plain rollout gives (100 for an unconstrained default strategy);
    ``None`` for anything else, a definition of an unexpected shape included."""
    try:
        return _rollout_percent(feature)
    except _UNREADABLE:
        return None


def _rollout_percent(feature: dict[str, Any]) -> float | None:
    for strategy in feature.get("strategies") or []:
        name = strategy.get("name")
        if name == "flexibleRollout":
            try:
                return float(strategy.get("parameters", {}).get("rollout", 0))
            except (TypeError, ValueError):
                return None
        if name == "default" and not any(
            c.get("contextName") != "currentTime" for c in strategy.get("constraints", [])
        ):
            return 100.0
    return None if feature.get("strategies") else 100.0


def summary(feature: dict[str, Any]) -> str:
    """A one-line description of the strategies, for lists and the dashboard."""
    try:
        return _summary(feature)
    except _UNREADABLE:
        return "unreadable definition (see the flag's problems)"


def _summary(feature: dict[str, Any]) -> str:
    parts = []
    for strategy in feature.get("strategies") or []:
        name, params = strategy.get("name"), strategy.get("parameters") or {}
        constraints = strategy.get("constraints") or []
        if name == "flexibleRollout":
            text = f"{params.get('rollout', '?')}% by {params.get('stickiness', 'default')}"
        elif str(strategy.get("title", "")).startswith(TARGET_TITLE_PREFIX):
            ids = constraints[0].get("values", []) if constraints else []
            text = f"{len(ids)} {str(strategy['title'])[len(TARGET_TITLE_PREFIX) :]}(s)"
        else:
            text = str(name)
        extra = [
            c
            for c in constraints
            if not str(strategy.get("title", "")).startswith(TARGET_TITLE_PREFIX)
            or c.get("contextName") == "currentTime"
        ]
        if extra:
            text += f" if {len(extra)} constraint(s)"
        parts.append(text)
    return " or ".join(parts) or "everyone"


def utcnow() -> datetime:
    return datetime.now(UTC)
