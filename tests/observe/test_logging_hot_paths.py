"""The fast paths of logging and masking give the same output as the general ones."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from safeship.observe.logging import _UtcTimestamper, configure_logging, get_logger
from safeship.observe.masking import DEFAULT_MASK_PATTERNS, PiiMasker

MASKER = PiiMasker()
PATTERNS = {pattern.name: pattern for pattern in DEFAULT_MASK_PATTERNS}
#: The phone pattern as first written (look-behind before the first character).
PHONE_LOOKBEHIND_FIRST = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"
    r"|(?<!\d)\(\d{3}\)\s?\d{3}-\d{4}(?!\d)"
    r"|(?<![\d-])\d{3}-\d{3}-\d{4}(?![\d-])"
)
phone_like = st.text(alphabet="0123456789+-() .a_\t", max_size=40)
any_text = st.text(alphabet="0123456789+-() .a_@\t\n\u00a0BearerTOKENbasic", max_size=60)


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
    stamp = _UtcTimestamper(clock=lambda: 1_700_000_000.25)
    assert stamp(None, "info", {}) == {"timestamp": "2023-11-14T22:13:20.250000Z"}
    live = _UtcTimestamper()(None, "info", {})["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", live)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def formatted() -> Iterator[tuple[logging.Formatter, Keep]]:
    """The JSON formatter `configure_logging` installs, and the records logged meanwhile."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = configure_logging(fmt="json", level="DEBUG", stream=io.StringIO())
    keep = Keep()
    root.addHandler(keep)
    try:
        assert handler.formatter is not None
        yield handler.formatter, keep
    finally:
        for old in list(root.handlers):
            root.removeHandler(old)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])
        structlog.reset_defaults()


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
