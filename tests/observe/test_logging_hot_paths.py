"""The fast paths of logging and masking give the same output as the general ones."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from collections.abc import Callable

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from safeship.observe.logging import (
    _EventDict,
    _formatter,
    _make_record,
    configure_logging,
    get_logger,
)
from safeship.observe.masking import DEFAULT_MASK_PATTERNS, MaskPattern, PiiMasker
from safeship.observe.rendering import UtcTimestamper

MASKER = PiiMasker()
PATTERNS = {pattern.name: pattern for pattern in DEFAULT_MASK_PATTERNS}
#: The phone pattern as first written (look-behind before the first character).
PHONE_LOOKBEHIND_FIRST = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"
    r"|(?<!\d)\(\d{3}\)\s?\d{3}-\d{4}(?!\d)"
    r"|(?<![\d-])\d{3}-\d{3}-\d{4}(?![\d-])"
)
phone_like = st.text(alphabet="0123456789+-() .a_\t", max_size=40)
any_text = st.text(
    alphabet="0123456789+-() .a_@\t\n\u00a0BearerTOKENbasic\u0663\u00e9", max_size=60
)


@given(text=phone_like)
def test_phone_pattern_finds_what_the_lookbehind_first_form_finds(text: str) -> None:
    regex = PATTERNS["phone"].regex
    assert [m.span() for m in regex.finditer(text)] == [
        m.span() for m in PHONE_LOOKBEHIND_FIRST.finditer(text)
    ]


@given(text=any_text)
def test_prefilters_never_skip_a_text_their_pattern_matches(text: str) -> None:
    for pattern in DEFAULT_MASK_PATTERNS:
        if pattern.prefilter is not None and pattern.regex.search(text):
            assert pattern.prefilter(text), (pattern.name, text)


def test_a_secret_is_masked_every_time_and_clean_text_is_unchanged() -> None:
    masker = PiiMasker()
    for _ in range(3):
        assert masker.mask_text("mail jane@example.com") == "mail ***"
        assert masker.mask({"path": "/orders/7", "to": "+44 20 7946 0958"}) == {
            "path": "/orders/7",
            "to": "***",
        }


def test_masking_long_values_takes_linear_time() -> None:
    started = time.perf_counter()
    MASKER.mask_text("a" * 200_000)
    MASKER.mask_text("b1" * 100_000)
    assert time.perf_counter() - started < 1.0


def test_timestamps_are_iso_utc_with_microseconds() -> None:
    stamp = UtcTimestamper(clock=lambda: 1_700_000_000.25)
    assert stamp(None, "info", {}) == {"timestamp": "2023-11-14T22:13:20.250000Z"}
    live = UtcTimestamper()(None, "info", {})["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", live)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def formatted(restore_logging: None) -> tuple[logging.Formatter, Keep]:
    """The JSON formatter `configure_logging` installs, and the records logged meanwhile."""
    handler = configure_logging(fmt="json", level="DEBUG", stream=io.StringIO())
    keep = Keep()
    logging.getLogger().addHandler(keep)
    assert handler.formatter is not None
    return handler.formatter, keep


def without_time(line: str) -> dict[str, object]:
    event: dict[str, object] = json.loads(line)
    event.pop("timestamp")
    return event


def test_fast_path_renders_like_structlogs_formatter(
    formatted: tuple[logging.Formatter, Keep],
) -> None:
    formatter, keep = formatted
    log = get_logger("app.orders", region="eu")
    log.info("order.placed", order_id=7, email="jane@example.com", token="t0ps3cret")
    try:
        raise ValueError("bad order")
    except ValueError:
        log.exception("order.failed", order_id=8)
    for record in keep.records:
        general = structlog.stdlib.ProcessorFormatter.format(formatter, record)  # type: ignore[arg-type]
        assert without_time(formatter.format(record)) == without_time(general)
    first, failed = (json.loads(formatter.format(r)) for r in keep.records)
    assert first["email"] == "***" and first["token"] == "***" and first["region"] == "eu"
    assert "ValueError: bad order" in failed["exception"]


RENDERERS = {
    "masked": _formatter(True, PiiMasker(), False),
    "unmasked": _formatter(True, None, False),
}
STAMP = re.compile(r'"timestamp": "[^"]*"')
leaf = (
    st.text(alphabet="ab@.+-() 0123456789Bearer\u00e9\n", max_size=30)
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e-7, 0.123, 1e22])
    | st.booleans()
    | st.none()
)
values = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["method", "path", "email", "token", "level", "logger", "request_id", "status",
     "timestamp", "trace_id", "user", "x_api_key", "order", "exc_info_text"]
)  # fmt: skip


def record_of(name: str, method: str, level: int, fields: dict[str, object]) -> logging.LogRecord:
    """The record `Logger` hands to logging for ``fields``."""
    logger = logging.getLogger(name)
    data = _EventDict(event="test.event")
    data.update(fields)
    return _make_record(logger, level, data, None, method)


@example(
    fields={"status": math.nan, "order": math.inf, "user": -math.inf, "path": 0.1},
    method="info",
    renderer="masked",
)
@example(
    fields={"email": "a@b.co", "path": "/x", "order": [{"token": "t"}], "level": 3},
    method="warn",
    renderer="masked",
)
@example(fields={"trace_id": "1", "path": {"a": None}}, method="info", renderer="unmasked")
@settings(max_examples=300, deadline=None)  # a first example may compile regexes
@given(
    fields=st.dictionaries(field_names, values, max_size=8),
    method=st.sampled_from(["info", "warning", "warn", "exception", "alert"]),
    renderer=st.sampled_from(sorted(RENDERERS)),
)
def test_field_by_field_rendering_gives_the_chains_text(
    fields: dict[str, object], method: str, renderer: str
) -> None:
    formatter = RENDERERS[renderer]
    record = record_of("app.hot", method, logging.INFO, fields)
    general = structlog.stdlib.ProcessorFormatter.format(formatter, record)
    for _ in range(2):  # the second time from cached fields
        assert STAMP.sub("T", formatter.format(record)) == STAMP.sub("T", general)


def test_cached_fields_never_hold_a_masked_value() -> None:
    formatter = _formatter(True, PiiMasker(), False)
    for _ in range(2):
        line = formatter.format(
            record_of("app.hot", "info", logging.INFO, {"note": "jane@example.com", "m": "GET"})
        )
        assert json.loads(line)["note"] == "***"
    renderer = formatter._json_line  # type: ignore[attr-defined]
    cached = " ".join(renderer._fields.values())
    assert '"m": "GET"' in cached and "jane" not in cached


#: Renderers for the group tests: default masking, none, and keys that mask numbers too.
GROUP_RENDERERS = {
    "masked": _formatter(True, PiiMasker(), False)._json_line,  # type: ignore[attr-defined]
    "unmasked": _formatter(True, None, False)._json_line,  # type: ignore[attr-defined]
    "status-secret": _formatter(True, PiiMasker(keys=("status", "client")), False)._json_line,  # type: ignore[attr-defined]
}
group_values = st.none() | st.integers(-5, 600) | st.booleans() | any_text | st.floats()


@settings(max_examples=300, deadline=None)
@given(
    values=st.tuples(group_values, group_values, group_values),
    renderer=st.sampled_from(sorted(GROUP_RENDERERS)),
)
def test_a_group_is_its_fields_joined_and_keeps_nothing_masked_or_unique(
    values: tuple[object, object, object], renderer: str
) -> None:
    render = GROUP_RENDERERS[renderer]
    keys = ("path", "status", "client")
    fields = ", ".join(render.field(k, v) for k, v in zip(keys, values, strict=True))
    for _ in range(2):  # the second time from the kept group, when kept
        assert render.group(keys, values) == fields
    kept = " ".join(render._groups[keys].values())
    assert "***" not in kept  # a masked value is never kept
    if any(v is not None and type(v) is not str for v in values):
        assert values not in render._groups[keys]  # 1 == 1.0 == True: never kept


@settings(max_examples=200, deadline=None)
@given(
    value=any_text | st.floats() | st.integers() | st.none(),
    key=st.sampled_from(["request_id", "duration_ms", "password", "note"]),
    renderer=st.sampled_from(sorted(GROUP_RENDERERS)),
)
def test_a_unique_field_is_rendered_as_any_field(value: object, key: str, renderer: str) -> None:
    render = GROUP_RENDERERS[renderer]
    assert render.unique_field(key, value) == render.field(key, value)


@given(now=st.floats(0, 4_102_444_800))
def test_the_timestamp_field_is_the_timestampers_text(now: float) -> None:
    render = GROUP_RENDERERS["masked"]
    assert render.timestamp(now) == '"timestamp": "' + render._stamp.text(now) + '"'


def test_bound_context_is_seen_only_while_something_is_bound() -> None:
    from safeship.observe.logging import bound_context, has_bound_context

    assert not has_bound_context()
    with bound_context(tenant="t1"):
        assert has_bound_context()
    assert not has_bound_context()  # unbound again: the key's variable holds nothing


TIMING = ("created", "msecs", "relativeCreated")


def test_records_made_from_cached_fields_equal_logging_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("app.records")
    msg = _EventDict(event="x")
    for _ in range(2):  # the second from the cache
        ours = vars(_make_record(logger, logging.WARNING, msg, None, "warning"))
        theirs = vars(logger.makeRecord(logger.name, logging.WARNING, "", 0, msg, (), None))
        assert {k: v for k, v in ours.items() if k not in TIMING} == {
            **{k: v for k, v in theirs.items() if k not in TIMING},
            "_logger": logger,
            "_name": "warning",
        }
        assert abs(ours["created"] - theirs["created"]) < 1.0

    class Tagged(logging.LogRecord):
        pass

    monkeypatch.setattr(logging, "_logRecordFactory", Tagged)
    assert type(_make_record(logger, logging.INFO, msg, None, "info")) is Tagged


@given(text=st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lt", "Lm", "Lo"))))
def test_patterns_said_to_need_a_non_letter_never_match_letters(text: str) -> None:
    assert text == "" or text.isalpha()
    for pattern in DEFAULT_MASK_PATTERNS:
        if not pattern.matches_letters:
            assert pattern.regex.search(text) is None, (pattern.name, text)


def test_a_custom_pattern_of_letters_is_still_applied_to_letter_only_text() -> None:
    secret_word = MaskPattern("word", re.compile("swordfish"))
    assert PiiMasker(patterns=[secret_word]).mask_text("swordfish") == "***"


def sole_handler() -> logging.Handler:
    """`configure_logging`'s handler, alone on the root (called in the test itself:
    pytest adds its own capturing handlers to the root before each test runs)."""
    return configure_logging(fmt="json", level="INFO", stream=io.StringIO())


@pytest.mark.usefixtures("restore_logging")
def test_events_skip_logging_machinery_only_when_the_handler_is_alone() -> None:
    from safeship.observe.logging import _sole_line_handler

    sole_json_handler = sole_handler()
    logger = logging.getLogger("app.sole")
    assert _sole_line_handler(logger, logging.INFO) is sole_json_handler
    assert _sole_line_handler(logging.getLogger("safeship.x"), logging.ERROR) is sole_json_handler
    # the alert counter on "safeship" must see alerts
    assert _sole_line_handler(logging.getLogger("safeship.x"), 45) is None

    keep = Keep()
    changes: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "another handler": (lambda: logger.addHandler(keep), lambda: logger.removeHandler(keep)),
        "a logger filter": (
            lambda: logger.addFilter(logging.Filter("x")),
            lambda: logger.filters.clear(),
        ),
        "a handler filter": (
            lambda: sole_json_handler.addFilter(logging.Filter("x")),
            lambda: sole_json_handler.filters.clear(),
        ),
        "a disabled logger": (
            lambda: setattr(logger, "disabled", True),
            lambda: setattr(logger, "disabled", False),
        ),
        "a record factory": (
            lambda: logging.setLogRecordFactory(type("R", (logging.LogRecord,), {})),
            lambda: logging.setLogRecordFactory(logging.LogRecord),
        ),
    }
    for name, (change, undo) in changes.items():
        change()
        try:
            assert _sole_line_handler(logger, logging.INFO) is None, name
        finally:
            undo()
    assert _sole_line_handler(logger, logging.INFO) is sole_json_handler
    logger.propagate = False
    try:
        assert _sole_line_handler(logger, logging.INFO) is None  # nothing handles it
    finally:
        logger.propagate = True


@pytest.mark.usefixtures("restore_logging")
def test_a_direct_line_is_the_line_logging_writes() -> None:
    sole_json_handler = sole_handler()
    stream = sole_json_handler.stream  # type: ignore[attr-defined]
    direct_writes: list[str] = []
    write_event = sole_json_handler.write_event  # type: ignore[attr-defined]

    def spy(*args: object) -> None:
        direct_writes.append(args[2]["event"])  # type: ignore[index]
        write_event(*args)

    sole_json_handler.write_event = spy  # type: ignore[attr-defined]
    log = get_logger("app.same", region="eu")
    log.info("order.placed", order_id=7, email="jane@example.com", note="ok")
    assert direct_writes == ["order.placed"]
    direct = stream.getvalue()
    keep = Keep()
    logging.getLogger().addHandler(keep)  # now the record goes through logging
    try:
        log.info("order.placed", order_id=7, email="jane@example.com", note="ok")
    finally:
        logging.getLogger().removeHandler(keep)
    through_logging = stream.getvalue()[len(direct) :]
    assert len(keep.records) == 1
    assert STAMP.sub("T", direct) == STAMP.sub("T", through_logging)
    assert json.loads(direct)["email"] == "***"


@pytest.mark.usefixtures("restore_logging")
def test_a_failing_direct_write_is_reported_like_logging_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sole_json_handler = sole_handler()
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(sole_json_handler, "handleError", reported.append)
    sole_json_handler.stream.close()  # type: ignore[attr-defined]
    get_logger("app.broken").info("order.placed", order_id=7)
    assert [r.msg["event"] for r in reported] == ["order.placed"]  # type: ignore[index]
