"""Logging's JSON renderer writes what structlog's standard processor chain writes, every
event goes through ``Logger.handle``, and masking's prefilters never skip a match."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from safeship.observe._logging import (
    _EventDict,
    _formatter,
    add_request_id,
    add_trace_context,
    configure_logging,
    count_foreign_alerts,
    drop_terminal_fields,
    get_logger,
)
from safeship.observe._masking import DEFAULT_MASK_PATTERNS, MaskPattern, PiiMasker
from safeship.observe._rendering import UtcTimestamper, render_json

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


def reference_chain(masker: PiiMasker | None) -> structlog.stdlib.ProcessorFormatter:
    """structlog's standard JSON chain of the steps `JsonLineRenderer` takes (the oracle
    of these tests: level, logger name, exception, masking, timestamp, trace ids)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            drop_terminal_fields,
            structlog.contextvars.merge_contextvars,
            add_request_id,
            count_foreign_alerts,
        ],
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *([masker] if masker is not None else []),
            UtcTimestamper(),
            add_trace_context,
            structlog.processors.JSONRenderer(serializer=render_json),
        ],
    )


def test_lines_are_what_structlogs_standard_chain_writes(
    formatted: tuple[logging.Formatter, Keep],
) -> None:
    formatter, keep = formatted
    log = get_logger("app.orders", region="eu")
    log.info("order.placed", order_id=7, email="jane@example.com", token="t0ps3cret")
    try:
        raise ValueError("bad order")
    except ValueError:
        log.exception("order.failed", order_id=8)
    logging.getLogger("app.stdlib").warning("stock low", extra={"sku": "a-1"})
    reference = reference_chain(PiiMasker())
    for record in keep.records:
        assert without_time(formatter.format(record)) == without_time(reference.format(record))
    first, failed, stdlib = (json.loads(formatter.format(r)) for r in keep.records)
    assert first["email"] == "***" and first["token"] == "***" and first["region"] == "eu"
    assert "ValueError: bad order" in failed["exception"]
    assert stdlib["sku"] == "a-1" and stdlib["event"] == "stock low"


RENDERERS = {
    "masked": (_formatter(True, PiiMasker(), False), reference_chain(PiiMasker())),
    "unmasked": (_formatter(True, None, False), reference_chain(None)),
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
    extra = {"_logger": logger, "_name": method}
    return logger.makeRecord(name, level, "", 0, data, (), None, extra=extra)


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
    formatter, reference = RENDERERS[renderer]
    record = record_of("app.hot", method, logging.INFO, fields)
    general = reference.format(record)
    for _ in range(2):  # the second time from cached fields
        assert STAMP.sub("T", formatter.format(record)) == STAMP.sub("T", general)


def test_cached_fields_never_hold_a_masked_value() -> None:
    formatter = _formatter(True, PiiMasker(), False)
    for _ in range(2):
        line = formatter.format(
            record_of("app.hot", "info", logging.INFO, {"note": "jane@example.com", "m": "GET"})
        )
        assert json.loads(line)["note"] == "***"
    renderer = formatter.renderer  # type: ignore[attr-defined]
    cached = " ".join(renderer._fields.values())
    assert '"m": "GET"' in cached and "jane" not in cached


def test_bound_context_is_seen_only_while_something_is_bound() -> None:
    from safeship.observe._logging import bound_context, has_bound_context

    assert not has_bound_context()
    with bound_context(tenant="t1"):
        assert has_bound_context()
    assert not has_bound_context()  # unbound again: the key's variable holds nothing


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
def test_every_event_goes_through_logging() -> None:
    """A logger filter, another handler, a record factory: each sees safeship's events."""
    stream = io.StringIO()
    configure_logging(fmt="json", level="INFO", stream=stream)
    logger = logging.getLogger("app.handled")
    log = get_logger("app.handled")
    keep = Keep()
    logger.addHandler(keep)
    seen: list[str] = []

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = standard(*args, **kwargs)
        seen.append(record.name)
        return record

    standard = logging.getLogRecordFactory()
    logging.setLogRecordFactory(factory)
    try:
        log.info("order.placed", order_id=7)
        logger.addFilter(lambda record: record.msg["order_id"] != 8)  # type: ignore[index]
        log.info("order.placed", order_id=8)
    finally:
        logging.setLogRecordFactory(standard)
        logger.removeHandler(keep)
        logger.filters.clear()
    assert seen == ["app.handled", "app.handled"]
    assert [r.msg["order_id"] for r in keep.records] == [7]  # type: ignore[index]
    assert [json.loads(line)["order_id"] for line in stream.getvalue().splitlines()] == [7]


@pytest.mark.usefixtures("restore_logging")
def test_a_failing_write_is_reported_as_logging_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = configure_logging(fmt="json", level="INFO", stream=io.StringIO())
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    handler.stream.close()  # type: ignore[attr-defined]
    get_logger("app.broken").info("order.placed", order_id=7)
    assert [r.msg["event"] for r in reported] == ["order.placed"]  # type: ignore[index]
