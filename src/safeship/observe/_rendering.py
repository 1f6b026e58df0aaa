"""JSON log lines: the timestamp, the encoder and the renderer of every JSON record.

`configure_logging` renders every record through structlog's ``ProcessorFormatter``;
for JSON lines its one processor after the stdlib pre-chain is `JsonLineRenderer`, which
adds the level and logger name, formats the exception, masks, stamps, adds trace ids
and encodes, field by field, with the JSON of recurring clean fields cached, so a
routine line (the access log) costs a few dictionary lookups per field. Its text is
that of structlog's own chain of those steps (a test holds it to it).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from safeship.observe._masking import PiiMasker

TraceProcessor = Callable[[Any, str, Any], Any]

#: Trace ids come from OpenTelemetry, once something imported it.
_OTEL_TRACE = "opentelemetry.trace"
#: structlog's add_log_level renames these methods.
_METHOD_LEVELS = {"exception": "error", "warn": "warning"}
#: Cached fragments: at most this many, and only of values this short.
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_LENGTH = 256
#: Values that differ on every event: not worth a cache entry.
_UNIQUE_KEYS = frozenset({"request_id"})
#: Keys the fast path leaves to the general one (set by steps after masking).
_LATE_KEYS = ("timestamp", "trace_id", "span_id")


class UtcTimestamper:
    """Processor: ``timestamp`` in ISO 8601 UTC with microseconds (``...T07:35:25.012345Z``).

    The same text as structlog's ``TimeStamper(fmt="iso", utc=True)``, always with six
    decimals; the date and time of day are formatted once per second, not per event.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")

    def text(self, now: float) -> str:
        """The timestamp of the moment ``now`` (seconds since the epoch)."""
        second = int(now)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        # %d truncates the float as int() does, without the call.
        return "%s.%06dZ" % (cached[1], (now - second) * 1_000_000)  # noqa: UP031

    def __call__(self, _logger: Any, _method: str, event_dict: Any) -> Any:
        event_dict["timestamp"] = self.text(self._clock())
        return event_dict


def json_default(value: Any) -> Any:
    """What JSON cannot encode: ``__structlog__()`` when defined, else ``repr`` (as structlog)."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


# One encoder for every line: json.dumps(default=...) would build a new one per call.
JSON_ENCODER = json.JSONEncoder(default=json_default)


def render_json(event: Any, **_dumps_kw: Any) -> str:
    """structlog ``JSONRenderer`` serializer: compact-spaced JSON, ASCII only."""
    return JSON_ENCODER.encode(event)


def value_encoder(check_circular: bool) -> Callable[[Any], str]:
    """``JSON_ENCODER.encode`` with the C encoder built once instead of per call.

    The output is the same text. Without the circular check (safe only for masked
    values, whose depth the masker bounds) a value is cheaper still.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pure-Python json: the plain encoder
        return JSON_ENCODER.encode
    markers: dict[int, Any] | None = {} if check_circular else None
    iterencode = make(
        markers,
        json_default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def encode(value: Any) -> str:
        if markers:
            markers.clear()  # left over by a value that failed to encode
        return "".join(iterencode(value, 0))

    return encode


_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _float_text(value: float) -> str:
    if math.isfinite(value):
        return float.__repr__(value)
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


class JsonLineRenderer:
    """The JSON processor chain of `configure_logging` for one event dict of safeship's.

    Fields are masked and encoded one by one. The JSON of a field whose key and value
    recur and hold nothing to mask (``"method": "GET"``, ``"route": "/orders/{id}"``)
    is kept, so the next event reuses it; values that were masked are never kept.
    Events the field-by-field path cannot render exactly (non-string keys, keys that
    later steps set) take the whole chain instead.
    """

    def __init__(
        self,
        masker: PiiMasker | None,
        timestamper: UtcTimestamper,
        trace: TraceProcessor | None,
    ) -> None:
        self._masker = masker
        self._stamp = timestamper
        self._trace = trace
        self._encode = value_encoder(check_circular=masker is None)
        self._fields: dict[tuple[str, str], str] = {}
        self._keys: dict[str, tuple[str, bool, bool]] = {}
        self._tails: dict[tuple[str, str], str] = {}

    def __call__(self, logger: Any, method: str, event_dict: Any) -> str:
        """The processor: the JSON line of a record's event dict (the last step of the
        chain; structlog's ProcessorFormatter adds the record as ``_record``)."""
        record = event_dict.pop("_record", None)
        event_dict.pop("_from_structlog", None)
        if record is not None:
            return self.render(event_dict, method, record.name, record.created)
        return self.render(event_dict, method, getattr(logger, "name", "?"), time.time())

    def render(self, event: Mapping[str, Any], method: str, logger: str, now: float) -> str:
        """The JSON line of ``event`` logged at ``method`` by ``logger`` at time ``now``."""
        level = _METHOD_LEVELS.get(method, method)
        if "level" in event or "logger" in event or "exc_info" in event:
            ed: Any = dict(event)  # the chain's order: set in place, or appended
            ed["level"] = level
            ed["logger"] = logger
            if "exc_info" in ed:
                ed = structlog.processors.format_exc_info(None, method, ed)
            parts = self._fields_of(ed)
            if parts is None:
                return self._whole_chain(ed, method, now)
        else:
            parts = self._fields_of(event)
            if parts is None:
                return self._whole_chain({**event, "level": level, "logger": logger}, method, now)
            tail = self._tails.get((level, logger))
            parts.append(tail if tail is not None else self._level_and_logger(level, logger))
        parts.append('"timestamp": "' + self._stamp.text(now) + '"')
        if self._trace is None or _OTEL_TRACE not in sys.modules:
            return "{" + ", ".join(parts) + "}"
        return "{" + ", ".join(parts) + self._trace_fields(method) + "}"

    def _level_and_logger(self, level: str, logger: str) -> str:
        """The ``level`` and ``logger`` fields, in the chain's order after the event's."""
        text = self._tails.get((level, logger))
        if text is None:
            level_field = self._string_field("level", level, self._key_info("level")[0], False)
            logger_field = self._string_field("logger", logger, self._key_info("logger")[0], False)
            text = level_field + ", " + logger_field
            clean = ("level", level) in self._fields and ("logger", logger) in self._fields
            if clean and len(self._tails) < _CACHE_MAX_ENTRIES:
                self._tails[(level, logger)] = text
        return text

    def field(self, key: str, value: Any) -> str:
        """The ``"key": value`` text of one field, as a line of any event renders it.

        For callers that render an event of fixed keys themselves (the access log);
        ``key`` must be a string that later steps do not set (not ``timestamp``,
        ``trace_id`` or ``span_id``).
        """
        if type(value) is str:
            cached = self._fields.get((key, value))
            if cached is not None:
                return cached
        info = self._keys.get(key)
        if info is None:
            info = self._key_info(key)
        return self._field_text(key, value, info)

    def _trace_fields(self, method: str) -> str:
        """``, "trace_id": ..., "span_id": ...`` of the active span, or ``""``."""
        if self._trace is None or _OTEL_TRACE not in sys.modules:
            return ""
        ids = self._trace(None, method, {})
        return "".join(f", {_quote(key)}: {_quote(value)}" for key, value in ids.items())

    def _fields_of(self, ed: Mapping[Any, Any]) -> list[str] | None:
        fields, keys = self._fields, self._keys
        parts: list[str] = []
        append = parts.append
        for key, value in ed.items():
            kind = type(value)
            if kind is str:
                cached = fields.get((key, value))
                if cached is not None:
                    append(cached)
                    continue
            info = keys.get(key)
            if info is None:
                if type(key) is not str or key in _LATE_KEYS:
                    return None
                info = self._key_info(key)
            # The commonest uncached fields of `_field_text` without its call: numbers
            # (status, durations) and verbatim ids, under keys that are not sensitive.
            if info[1]:
                append(self._field_text(key, value, info))
            elif kind is int:
                append(info[0] + int.__repr__(value))
            elif kind is float:
                append(info[0] + _float_text(value))
            elif kind is str and info[2]:
                append(info[0] + _quote(value))
            else:
                append(self._field_text(key, value, info))
        return parts

    def _field_text(self, key: str, value: Any, info: tuple[str, bool, bool]) -> str:
        prefix, sensitive, verbatim = info
        kind = type(value)
        if sensitive:
            return prefix + _quote(self._replacement())
        if kind is str:
            return self._string_field(key, value, prefix, verbatim)
        if kind is int:
            return prefix + int.__repr__(value)
        if kind is float:
            return prefix + _float_text(value)
        if value is None or kind is bool:
            return prefix + ("null" if value is None else "true" if value else "false")
        masked = value if self._masker is None else self._masker.mask(value, 1)
        return prefix + self._encode(masked)

    def _string_field(self, key: str, value: str, prefix: str, verbatim: bool) -> str:
        masker, unique = self._masker, key in _UNIQUE_KEYS
        if masker is None or verbatim:
            masked = value
        else:
            masked = masker.mask_text(value, remember=not unique)
        text = prefix + _quote(masked)
        if masked == value and not verbatim and not unique and len(value) <= _CACHE_MAX_LENGTH:
            if len(self._fields) >= _CACHE_MAX_ENTRIES:
                self._fields.clear()
            self._fields[(key, value)] = text
        return text

    def _key_info(self, key: str) -> tuple[str, bool, bool]:
        """The ``"key": `` prefix, whether the key's values are masked whole, verbatim."""
        masker = self._masker
        if masker is None:
            info = (_quote(key) + ": ", False, False)
        else:
            info = (
                _quote(masker.mask_text(key)) + ": ",
                masker.is_sensitive_key(key),
                masker.is_verbatim_key(key),
            )
        if len(self._keys) >= _CACHE_MAX_ENTRIES:
            self._keys.clear()
        self._keys[key] = info
        return info

    def _replacement(self) -> str:
        return self._masker.replacement if self._masker is not None else ""

    def _whole_chain(self, ed: Any, method: str, now: float) -> str:
        if self._masker is not None:
            ed = self._masker.mask(ed)
        ed["timestamp"] = self._stamp.text(now)
        if self._trace is not None:
            ed = self._trace(None, method, ed)
        return self._encode(ed)
