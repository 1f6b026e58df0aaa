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
    """A value pattern to mask; ``validate`` (optional) confirms a match, e.g. Luhn.

    ``prefilter`` (optional) is a cheap test that holds for every text the regex can
    match in (e-mail: ``"@" in text``); text failing it is not searched. Most logged
    values hold no PII, so this keeps masking fast, on long values too.
    """

    name: str
    regex: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    prefilter: Callable[[str], bool] | None = None
    #: False when no match can consist of letters only (every match holds a digit,
    #: ``@`` or a space): letter-only text (event names, request ids) then skips the
    #: pattern without any search.
    matches_letters: bool = True


def _has_at(text: str) -> bool:
    return "@" in text


def _has_whitespace(text: str) -> bool:
    # Every whitespace character but the space is a control or separator character,
    # which str.isprintable() rejects: one C-speed pass instead of a regex search.
    return " " in text or not text.isprintable()


def _has_non_letter(text: str) -> bool:
    # A card number holds digits, which are never letters: one C-speed pass that skips
    # the regex for letter-only text (event names, generated request ids).
    return not text.isalpha()


def _has_phone_start(text: str) -> bool:
    return "+" in text or "(" in text or "-" in text


DEFAULT_MASK_PATTERNS: tuple[MaskPattern, ...] = (
    MaskPattern(
        "email",
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),
        prefilter=_has_at,
        matches_letters=False,
    ),
    MaskPattern(
        "bearer",
        re.compile(r"(?i)\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
        prefilter=_has_whitespace,
        matches_letters=False,
    ),
    MaskPattern(
        "card",
        re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"),
        _luhn_ok,
        prefilter=_has_non_letter,
        matches_letters=False,
    ),
    MaskPattern(
        "phone",
        re.compile(
            # Each branch starts with its first character and only then looks behind
            # it ("+ not after a word character or +"): the same matches, found faster.
            r"\+(?<![\w+]\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"
            r"|\((?<!\d\()\d{3}\)\s?\d{3}-\d{4}(?!\d)"
            r"|\d(?<![\d-]\d)\d{2}-\d{3}-\d{4}(?![\d-])"
        ),
        prefilter=_has_phone_start,
        matches_letters=False,
    ),
)


_PLAIN_TYPES = frozenset({int, float, bool, type(None)})
_CLEAN_MAX_LENGTH = 256
_CLEAN_MAX_ENTRIES = 4096


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
        verbatim_keys: Iterable[str] = ("trace_id", "span_id", "request_id"),
    ) -> None:
        self._keys = tuple(sorted({_normalize_key(k) for k in keys if k}))
        # Values under these keys are ids safeship generated or validated (trace ids as
        # hex, request ids as holding nothing these patterns match): written as they
        # are, so a digit run in an id is never mistaken for a card number.
        self._verbatim = frozenset(verbatim_keys)
        self._patterns = tuple(patterns)
        if not replacement or any(p.regex.search(replacement) for p in self._patterns):
            raise ValueError("PiiMasker.replacement must be non-empty and match no pattern")
        if max_depth < 1:
            raise ValueError("PiiMasker.max_depth must be >= 1")
        self.replacement = replacement
        self.max_depth = max_depth
        self._key_cache: dict[str, bool] = {}
        self._substitutions = tuple(
            (p.prefilter, p.regex.sub, self._replacer(p)) for p in self._patterns
        )
        # Short strings seen to hold nothing to mask (event names, methods, routes, keys):
        # they recur on every event, so the patterns run once per distinct value. Only
        # unchanged strings are kept, so the cache never holds a secret.
        self._clean: set[str] = set()
        self._letters_are_clean = not any(p.matches_letters for p in self._patterns)
        self._known_keys: dict[str, tuple[str, bool]] = {}

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

    def is_verbatim_key(self, key: object) -> bool:
        """Whether string values under ``key`` are written as they are (safeship's ids)."""
        return key in self._verbatim

    @property
    def letters_are_clean(self) -> bool:
        """Whether no pattern can match a text made only of letters (`mask_text`
        returns such a text unchanged)."""
        return self._letters_are_clean

    def mask_text(self, text: str, *, remember: bool = True) -> str:
        """Replace every pattern match in ``text``.

        Short clean texts are remembered, so they are not searched again; pass
        ``remember=False`` for values that never recur (request ids).
        """
        if text in self._clean or (self._letters_are_clean and text.isalpha()):
            return text
        masked = text
        for prefilter, substitute, replace in self._substitutions:
            if prefilter is None or prefilter(masked):
                masked = substitute(replace, masked)
        if remember and masked == text and len(text) <= _CLEAN_MAX_LENGTH:
            if len(self._clean) >= _CLEAN_MAX_ENTRIES:
                self._clean.clear()
            self._clean.add(text)
        return masked

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
        mask_text, known_keys = self.mask_text, self._known_keys
        for key, item in value.items():
            masked_key, sensitive = known_keys.get(key) or self._key_info(key)
            kind = type(item)
            if sensitive:
                out[masked_key] = self.replacement
            elif kind is str and key in self._verbatim:
                out[masked_key] = item
            elif kind is str:  # the common cases first, without the dispatch of `mask`
                out[masked_key] = mask_text(item)
            elif kind in _PLAIN_TYPES:
                out[masked_key] = item
            else:
                out[masked_key] = self.mask(item, depth + 1)
        return out

    def _key_info(self, key: Any) -> tuple[Any, bool]:
        """A key as written out and whether its value is masked; kept for clean keys."""
        if not isinstance(key, str):
            return key, False
        info = (self.mask_text(key), self.is_sensitive_key(key))
        if info[0] == key and len(self._known_keys) < _CLEAN_MAX_ENTRIES:
            self._known_keys[key] = info
        return info

    def _mask_object(self, value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            text = bytes(value).decode("utf-8", "replace")
        else:
            text = repr(value)
        masked = self.mask_text(text)
        return value if masked == text else masked
