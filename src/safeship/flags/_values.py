"""Strict parsers for the values rules compare: numbers, semantic versions, dates, IP ranges.

They accept what Unleash's reference engine accepts and nothing looser, so the same state
and context give the same answer everywhere: ``" 2"`` is not a number in a context, a
version needs all three parts and no ``v`` prefix, a date needs a time and an offset.
Each returns ``None`` for text it does not accept; none of them raises.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

_INT_TEXT = re.compile(r"\+?[0-9]+")
_U64 = 2**64


def parse_percentage(raw: object) -> int | None:
    """A rollout percentage: a whole number 0..100, as text (``"25"``) or an ``int``."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _INT_TEXT.fullmatch(raw):
        value = int(raw)
    else:
        return None
    return value if 0 <= value <= 100 else None


def parse_number(text: object) -> float | None:
    """A number from a context or a rule: decimal or exponent notation, ``inf`` and ``nan``.

    Whitespace, ``_`` separators and non-ASCII digits are refused (Python's ``float``
    would take them; other SDKs do not).
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str) or not text.isascii() or "_" in text:
        return None
    if any(char.isspace() for char in text):
        return None
    try:
        return float(text)
    except ValueError:
        return None


_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


@lru_cache(maxsize=4096)
def parse_semver(text: str) -> SemverKey | None:
    """A sortable key for a semantic version (2.0.0), or ``None``; build metadata is ignored.

    A release sorts after its pre-releases; numeric pre-release identifiers sort before
    alphanumeric ones and compare as numbers. Cached: versions repeat across requests.
    """
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    numbers = (int(major), int(minor), int(patch))
    if any(number >= _U64 for number in numbers):
        return None
    if pre is None:
        return (*numbers, 1, ())
    return (*numbers, 0, tuple(_pre_release_part(part) for part in pre.split(".")))


def _pre_release_part(part: str) -> tuple[int, int, str]:
    return (0, int(part), "") if part.isdigit() else (1, 0, part)


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_timestamp(value: object) -> float | None:
    """POSIX seconds from an RFC 3339 date-time (``2024-05-01T12:00:00.000Z``) or aware datetime.

    A date without a time or an offset, or a naive ``datetime``, is refused: it does not
    say which instant it means.
    """
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo is not None else None
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    return _instant(*match.groups())


def _instant(
    year: str,
    month: str,
    day: str,
    hour: str,
    minute: str,
    second: str,
    fraction: str | None,
    offset: str,
) -> float | None:
    seconds = min(int(second), 59)  # a leap second (:60) counts as the end of :59
    micros = int((fraction or "0")[:6].ljust(6, "0")) if int(second) < 60 else 999_999
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), seconds, micros, _zone(offset)
        )
    except ValueError:
        return None
    return moment.timestamp()


def _zone(offset: str) -> timezone:
    if offset == "Z":
        return UTC
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


IpKey = tuple[int, int]
"""An address as ``(version, integer)``."""

Network = tuple[int, int, int]
"""A range as ``(version, network integer, mask integer)``: ``ip & mask == network``."""


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> IpKey | None:
    """An IPv4 or IPv6 address as ``(version, integer)``, or ``None``. Cached per address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def parse_network(text: str) -> Network | None:
    """An address or CIDR range (host bits allowed: ``10.1.2.3/8`` means ``10.0.0.0/8``)."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    return network.version, int(network.network_address), int(network.netmask)


def in_networks(address: IpKey, networks: tuple[Network, ...]) -> bool:
    """Whether the address lies in one of the ranges (never across IPv4 and IPv6)."""
    version, number = address
    for net_version, network, mask in networks:
        if net_version == version and number & mask == network:
            return True
    return False
