"""The strict parsers and the translation of rule patterns."""

from __future__ import annotations

import pytest

from safeship.flags._patterns import PatternError, compile_pattern, translate
from safeship.flags._values import (
    parse_network,
    parse_number,
    parse_percentage,
    parse_semver,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25", 25),
        ("+7", 7),
        ("050", 50),
        (100, 100),
        ("101", None),
        ("-1", None),
        ("2.5", None),
        (" 5", None),
        ("5_0", None),
        (True, None),
        ("٥", None),
    ],
)
def test_percentages_are_whole_numbers_up_to_100(text: object, expected: int | None) -> None:
    assert parse_percentage(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", 1.5),
        ("-2e3", -2000.0),
        ("7", 7.0),
        (3, 3.0),
        (" 1", None),
        ("1_0", None),
        ("", None),
        ("one", None),
        (False, None),
        ("١٢", None),
    ],
)
def test_numbers_are_parsed_strictly(text: object, expected: float | None) -> None:
    assert parse_number(text) == expected


def test_semver_ordering_follows_the_specification() -> None:
    ordered = [
        "1.0.0-1",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    keys = [parse_semver(text) for text in ordered]
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
    assert parse_semver("1.0.0+build") == parse_semver("1.0.0")
    for bad in (
        "1.0",
        "v1.0.0",
        "01.0.0",
        "1.0.0-01",
        "1.0.0 ",
        "1.0.0-",
        "99999999999999999999.0.0",
    ):
        assert parse_semver(bad) is None


def test_timestamps_need_a_time_and_an_offset() -> None:
    assert parse_timestamp("1970-01-01T00:00:01Z") == 1.0
    assert parse_timestamp("1970-01-01T01:00:01.500+01:00") == 1.5
    assert parse_timestamp("1970-01-01T00:00:01.123456789Z") == pytest.approx(1.123456)
    for bad in (
        "1970-01-01",
        "1970-01-01T00:00:01",
        "1970-13-01T00:00:00Z",
        "soon",
        "1970-01-01 00:00:01Z",
    ):
        assert parse_timestamp(bad) is None


def test_networks_accept_addresses_and_ranges() -> None:
    assert parse_network("10.1.2.3") == (4, 0x0A010203, 0xFFFFFFFF)
    assert parse_network(" 10.1.2.3/8 ") == (4, 0x0A000000, 0xFF000000)
    assert parse_network("10.1") is None


@pytest.mark.parametrize(
    ("pattern", "translated"),
    [
        ("^a$", r"^a\Z"),
        ("(?m)^a$", "(?m:^a$)"),
        ("a(?i)b|c", "a(?i:b)|(?i:c)"),
        ("[[:digit:]x]", "[0-9x]"),
        ("(?<word>w)", "(?P<word>w)"),
        (r"a\z", r"a\Z"),
        (r"\x{263A}", r"\U0000263A"),
        ("[]a]", r"[\]a]"),
    ],
)
def test_patterns_translate_to_python(pattern: str, translated: str) -> None:
    assert translate(pattern) == translated


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=a)",
        "(?<!a)b",
        r"(a)\1",
        r"\pL",
        "(?U)a+",
        "[a&&b]",
        "[[a]]",
        r"\Qx\E",
        "(a",
        "a)",
        "[a",
        "a\\",
    ],
)
def test_patterns_without_an_equivalent_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_case_insensitive_patterns() -> None:
    assert compile_pattern("^abc$", ignore_case=True).search("ABC")
