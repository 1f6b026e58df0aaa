"""PII masking for log events: sensitive keys and value patterns, at any nesting depth."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Keys whose values are always masked. Matching ignores case, ``-`` and ``_`` and also
#: hits longer keys that contain one (``user_password``, ``X-Api-Key``).
DEFAULT_MASK_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "session",
    "credential",
    "private_key",
    "phone",
    "email",
    "ssn",
    "card_number",
    "cvv",
)


def _luhn_ok(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class MaskPattern:
    """A value pattern to mask; ``validate`` (optional) confirms a match, e.g. Luhn."""

    name: str
    regex: re.Pattern[str]
    validate: Callable[[str], bool] | None = None


DEFAULT_MASK_PATTERNS: tuple[MaskPattern, ...] = (
    MaskPattern("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")),
    MaskPattern("bearer", re.compile(r"(?i)\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")),
    MaskPattern("card", re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"), _luhn_ok),
    MaskPattern(
        "phone",
        re.compile(
            r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"
            r"|(?<!\d)\(\d{3}\)\s?\d{3}-\d{4}(?!\d)"
            r"|(?<![\d-])\d{3}-\d{3}-\d{4}(?![\d-])"
        ),
    ),
)


def _normalize_key(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


class PiiMasker:
    """A structlog processor (and plain function) that masks secrets and PII.

    Values under a sensitive key are replaced whole, whatever their type; strings
    elsewhere have matches of the value patterns replaced. Dicts, lists, tuples and sets
    are walked recursively; other objects are masked through their ``repr`` when it
    contains a match.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_MASK_KEYS,
        patterns: Iterable[MaskPattern] = DEFAULT_MASK_PATTERNS,
        replacement: str = "***",
        max_depth: int = 32,
    ) -> None:
        self._keys = tuple(sorted({_normalize_key(k) for k in keys if k}))
        self._patterns = tuple(patterns)
        if not replacement or any(p.regex.search(replacement) for p in self._patterns):
            raise ValueError("PiiMasker.replacement must be non-empty and match no pattern")
        if max_depth < 1:
            raise ValueError("PiiMasker.max_depth must be >= 1")
        self.replacement = replacement
        self.max_depth = max_depth
        self._key_cache: dict[str, bool] = {}

    def __call__(self, _logger: Any, _method: str, event_dict: Any) -> Any:
        """structlog processor entry point."""
        return self.mask(event_dict)

    def is_sensitive_key(self, key: object) -> bool:
        """Whether values under ``key`` are masked whole."""
        if not isinstance(key, str):
            return False
        hit = self._key_cache.get(key)
        if hit is None:
            norm = _normalize_key(key)
            hit = any(k in norm for k in self._keys)
            if len(self._key_cache) < 4096:
                self._key_cache[key] = hit
        return hit

    def mask_text(self, text: str) -> str:
        """Replace every pattern match in ``text``."""
        for pattern in self._patterns:
            text = pattern.regex.sub(self._replacer(pattern), text)
        return text

    def _replacer(self, pattern: MaskPattern) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            if pattern.validate is None or pattern.validate(match.group()):
                return self.replacement
            return match.group()

        return replace

    def mask(self, value: Any, depth: int = 0) -> Any:
        """Return ``value`` with secrets masked (a new container; the input is not changed)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if depth >= self.max_depth:
            return self.replacement
        if isinstance(value, Mapping):
            return self._mask_mapping(value, depth)
        if isinstance(value, list | tuple | set | frozenset):
            items = [self.mask(item, depth + 1) for item in value]
            return items if isinstance(value, list | set | frozenset) else tuple(items)
        return self._mask_object(value)

    def _mask_mapping(self, value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, item in value.items():
            masked_key = self.mask_text(key) if isinstance(key, str) else key
            if self.is_sensitive_key(key):
                out[masked_key] = self.replacement
            else:
                out[masked_key] = self.mask(item, depth + 1)
        return out

    def _mask_object(self, value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            text = bytes(value).decode("utf-8", "replace")
        else:
            text = repr(value)
        masked = self.mask_text(text)
        return value if masked == text else masked
