"""What may be stored: checks run on every flag write before anything is written.

A write is checked as a change of the whole state, ``before`` to ``after``: every value it
brings must be storable JSON (no NUL, no lone surrogate, finite numbers, bounded depth),
every segment must be an object with an integer id in range and a list of valid
constraints, and the write may not add a problem to any flag it touches, to a flag that
depends on one it touches, or to a flag using a segment it touches (a missing parent or
segment, a rule that cannot be evaluated). So a state that every reader compiles stays
that way, and one that was already broken elsewhere does not block unrelated writes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from safeship.flags import _authoring as authoring
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags._compiler import compile_state
from safeship.flags._constraints import RuleError, compile_constraint
from safeship.flags._model import FlagProblem
from safeship.flags._strategies import Environment

MAX_SEGMENT_ID = 2**31 - 1
MAX_DESCRIPTION = 2000
MAX_FLAGS_PER_IMPORT = 5000
MAX_DEPTH = 32
_ENV = Environment("validation", time.time, random.randint)


@dataclass(frozen=True, slots=True)
class StateView:
    """Stored definitions: flag name -> feature, segment id -> segment."""

    features: dict[str, Any] = field(default_factory=dict)
    segments: dict[int, Any] = field(default_factory=dict)

    def with_features(self, features: Iterable[Mapping[str, Any]]) -> StateView:
        return replace(self, features={**self.features, **{f["name"]: f for f in features}})

    def without_feature(self, name: str) -> StateView:
        return replace(self, features={k: v for k, v in self.features.items() if k != name})

    def with_segments(self, segments: Mapping[int, Mapping[str, Any]]) -> StateView:
        return replace(self, segments={**self.segments, **segments})


Locate = Callable[[FlagProblem], str]


def check_json(value: object, where: str, depth: int = 0) -> None:
    """``value`` is JSON every database stores: raises ``FlagDefinitionError`` naming where."""
    if depth > MAX_DEPTH:
        raise FlagDefinitionError(f"nested deeper than {MAX_DEPTH} levels", field=where)
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FlagDefinitionError("must be a finite number", field=where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FlagDefinitionError("object keys must be strings", field=where)
            check_text(key, where)
            check_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]", depth + 1)
    else:
        raise FlagDefinitionError(f"{type(value).__name__} is not a JSON value", field=where)


def check_text(value: str, where: str) -> None:
    """Text every database stores: no NUL character, no unpaired surrogate."""
    if "\x00" in value:
        raise FlagDefinitionError("must not contain the NUL character (U+0000)", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FlagDefinitionError(
            "must not contain unpaired surrogates (not valid Unicode text)", field=where
        ) from None


def check_segment(segment: object, where: str) -> int:
    """A segment as stored and used by strategies; returns its id."""
    if not isinstance(segment, Mapping):
        raise FlagDefinitionError("a segment is an object with an id and constraints", field=where)
    segment_id = segment.get("id")
    if not isinstance(segment_id, int) or isinstance(segment_id, bool):
        raise FlagDefinitionError(
            f"must be a whole number from 1 to {MAX_SEGMENT_ID}", field=f"{where}.id"
        )
    if not 1 <= segment_id <= MAX_SEGMENT_ID:
        raise FlagDefinitionError(
            f"{segment_id} is out of range: use 1 to {MAX_SEGMENT_ID}", field=f"{where}.id"
        )
    check_json(segment, where)
    _check_constraints(segment.get("constraints"), f"{where}.constraints")
    return segment_id


def _check_constraints(raw: object, where: str) -> None:
    if raw is None:
        return
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise FlagDefinitionError("must be a list of constraints", field=where)
    for index, item in enumerate(raw):
        ignored: list[tuple[str, str]] = []
        try:
            compile_constraint(item, time.time, ignored)
        except RuleError as problem:
            raise FlagDefinitionError(
                problem.message, field=_join(f"{where}[{index}]", problem.field)
            ) from None
        for entry, message in ignored:
            raise FlagDefinitionError(message, field=_join(f"{where}[{index}]", entry))


def check_change(
    before: StateView,
    after: StateView,
    *,
    flags: Iterable[str] = (),
    segments: Iterable[int] = (),
    locate: Locate | None = None,
) -> None:
    """Refuse the change when it adds a problem to a flag it affects (see the module)."""
    touched = set(flags)
    affected = (
        touched
        | _children(touched, before)
        | _children(touched, after)
        | _users(set(segments), after)
    )
    added = _problems(after, affected) - _problems(before, affected)
    if added:
        first = min(added, key=lambda p: (p.flag not in touched, p.flag, p.field))
        where = (locate or _default_locate)(first)
        if first.flag in touched:
            raise FlagDefinitionError(first.message, field=where)
        raise FlagDefinitionError(f"flag {first.flag!r} would break: {first.message}", field=where)


def _default_locate(problem: FlagProblem) -> str:
    return _join("definition", problem.field)


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _dependencies(feature: object) -> list[Any]:
    listed = feature.get("dependencies") if isinstance(feature, Mapping) else None
    return list(listed) if isinstance(listed, list) else []


def _parents(feature: object) -> set[str]:
    return {
        str(dependency.get("feature"))
        for dependency in _dependencies(feature)
        if isinstance(dependency, Mapping)
    }


def _children(names: set[str], view: StateView) -> set[str]:
    return {name for name, feature in view.features.items() if _parents(feature) & names}


def _users(segment_ids: set[int], view: StateView) -> set[str]:
    if not segment_ids:
        return set()
    found = set()
    for name, feature in view.features.items():
        strategies = feature.get("strategies") if isinstance(feature, Mapping) else None
        for strategy in strategies if isinstance(strategies, list) else ():
            listed = strategy.get("segments") if isinstance(strategy, Mapping) else None
            if isinstance(listed, list) and any(
                isinstance(i, int) and i in segment_ids for i in listed
            ):
                found.add(name)
    return found


def _problems(view: StateView, names: set[str]) -> set[FlagProblem]:
    """The problems of ``names`` in ``view``, compiled with their parents only."""
    wanted = names & view.features.keys()
    if not wanted:
        return set()
    closure = set(wanted)
    for name in wanted:
        closure |= _parents(view.features[name]) & view.features.keys()
    state = {
        "features": [view.features[name] for name in sorted(closure)],
        "segments": list(view.segments.values()),
    }
    compiled = compile_state(state, _ENV)
    return {problem for name in wanted if name in compiled for problem in compiled[name].problems}


def import_entries(
    state: object,
) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """The features and segments of an import, each checked on its own (see ``validation``)."""
    features = state.get("features") if isinstance(state, Mapping) else None
    if not isinstance(features, list):
        raise FlagDefinitionError("features: an Unleash state needs a 'features' list")
    if len(features) > MAX_FLAGS_PER_IMPORT:
        raise FlagDefinitionError(f"features: at most {MAX_FLAGS_PER_IMPORT} per import")
    checked: dict[str, dict[str, Any]] = {}
    for i, feature in enumerate(features):
        if not isinstance(feature, Mapping):
            raise FlagDefinitionError("a feature is an object", field=f"features[{i}]")
        try:
            name = authoring.check_name(feature.get("name"))
        except FlagDefinitionError as exc:
            raise FlagDefinitionError(exc.problem, field=f"features[{i}].name") from None
        if name in checked:
            raise FlagDefinitionError(f"{name!r} appears twice", field=f"features[{i}].name")
        check_json(feature, f"features[{i}]")
        checked[name] = dict(feature)
    raw_segments = state.get("segments") if isinstance(state, Mapping) else None
    if raw_segments is None:
        raw_segments = []
    if not isinstance(raw_segments, list):
        raise FlagDefinitionError("must be a list of segments", field="segments")
    segments: dict[int, dict[str, Any]] = {}
    for i, segment in enumerate(raw_segments):
        segment_id = check_segment(segment, f"segments[{i}]")
        if segment_id in segments:
            raise FlagDefinitionError(f"{segment_id} appears twice", field=f"segments[{i}].id")
        segments[segment_id] = dict(segment)
    return list(checked.values()), segments


def check_metadata(description: object, lifetime_days: object, owner: object = None) -> None:
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise FlagDefinitionError(f"description: text of at most {MAX_DESCRIPTION} characters")
    if owner is not None and (not isinstance(owner, str) or len(owner) > 200):
        raise FlagDefinitionError("owner: text of at most 200 characters")
    for where, text in (("description", description), ("owner", owner)):
        if isinstance(text, str):
            check_text(text, where)
    if lifetime_days is not None and (
        not isinstance(lifetime_days, int) or not 1 <= lifetime_days <= 3650
    ):
        raise FlagDefinitionError("lifetime_days: a whole number of days from 1 to 3650")
