"""Unleash's delta format (``{"events": [...]}``, as ``/api/client/delta`` serves it) folded
into the full state format (``{"version": 1, "features": [...], "segments": [...]}``).

Events apply in order: ``hydration`` replaces every feature and segment,
``feature-updated`` adds or replaces one feature by name, ``feature-removed`` drops one by
``featureName``, ``segment-updated`` adds or replaces one segment by id and
``segment-removed`` drops one by ``segmentId``. An event of another type is ignored (newer
servers may add types, as Unleash's SDKs ignore them); an event of a known type without the
fields it needs raises ``FlagStateError``, as an unusable state does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from safeship.flags._model import FlagStateError

MAX_EVENTS = 100_000


def is_delta(state: object) -> TypeGuard[Mapping[str, Any]]:
    """Whether ``state`` is in the delta format rather than the full one."""
    return isinstance(state, Mapping) and "events" in state and "features" not in state


def fold_delta(state: Mapping[str, Any]) -> dict[str, Any]:
    """The full state that applying ``state["events"]`` in order to an empty state gives."""
    events = state.get("events")
    if isinstance(events, str) or not isinstance(events, Sequence):
        raise FlagStateError("must be a list of delta events", field="events")
    if len(events) > MAX_EVENTS:
        raise FlagStateError(f"at most {MAX_EVENTS} delta events", field="events")
    features: dict[str, Any] = {}
    segments: dict[int, Any] = {}
    for index, event in enumerate(events):
        field = f"events[{index}]"
        if not isinstance(event, Mapping):
            raise FlagStateError("a delta event is an object", field=field)
        kind = event.get("type")
        if kind == "hydration":
            features = {_name(f, field): f for f in _list(event.get("features"), field)}
            segments = {_id(s, field): s for s in _list(event.get("segments", []), field)}
        elif kind == "feature-updated":
            feature = event.get("feature")
            features[_name(feature, f"{field}.feature")] = feature
        elif kind == "feature-removed":
            features.pop(_text(event.get("featureName"), f"{field}.featureName"), None)
        elif kind == "segment-updated":
            segment = event.get("segment")
            segments[_id(segment, f"{field}.segment")] = segment
        elif kind == "segment-removed":
            segments.pop(_int(event.get("segmentId"), f"{field}.segmentId"), None)
    return {"version": 1, "features": list(features.values()), "segments": list(segments.values())}


def _list(value: object, field: str) -> Sequence[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise FlagStateError("must be a list", field=field)
    return value


def _name(feature: object, field: str) -> str:
    if not isinstance(feature, Mapping):
        raise FlagStateError("a feature is an object", field=field)
    return _text(feature.get("name"), f"{field}.name")


def _id(segment: object, field: str) -> int:
    if not isinstance(segment, Mapping):
        raise FlagStateError("a segment is an object", field=field)
    return _int(segment.get("id"), f"{field}.id")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise FlagStateError("must be a non-empty string", field=field)
    return value


def _int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FlagStateError("must be an integer", field=field)
    return value
