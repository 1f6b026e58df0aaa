"""`safe_filename`: turn an uploaded file's name into one safe to store on disk."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable

from safeship.errors import SafeshipError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTTED_RUN = re.compile(r"[._-]*\.[._-]*")
_UNDERSCORES = re.compile(r"_{2,}")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


class UnsafeFilenameError(SafeshipError, ValueError):
    """The file name's extension is not in the allow-list."""


def _basename(name: str) -> str:
    return re.split(r"[/\\]", name)[-1]


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _clean(stem: str) -> str:
    stem = _UNSAFE.sub("_", stem)
    stem = _DOTTED_RUN.sub(".", _UNDERSCORES.sub("_", stem))
    return stem.strip("._-")


def _split(name: str) -> tuple[str, str]:
    """Stem and lower-case alphanumeric extension of a basename."""
    base = _ascii(_basename(name)).strip().rstrip(". ")
    stem_raw, dot, ext_raw = base.rpartition(".")
    if not dot:
        return _clean(base), ""
    ext = _NON_ALNUM.sub("", ext_raw).lower()
    if not stem_raw.strip("._- "):  # ".bashrc": a hidden name, not an extension
        return _clean(ext_raw), ""
    return _clean(stem_raw), ext


def safe_filename(
    name: str,
    *,
    max_length: int = 120,
    allowed_extensions: Iterable[str] | None = None,
    random_prefix: bool = False,
    default_stem: str = "file",
) -> str:
    """A storage-safe version of ``name``.

    Keeps the basename only (no directories, ``..`` or drive letters), letters without
    accents, digits, ``.``, ``_`` and ``-``; collapses repeated dots; strips leading dots
    (no hidden files) and dashes (no option-like names); avoids Windows device names;
    lower-cases the extension and, given ``allowed_extensions``, raises
    `UnsafeFilenameError` for any other; caps the length at ``max_length`` keeping the
    extension; with ``random_prefix`` prepends 16 random hex digits so names never clash.
    """
    if max_length < 16:
        raise ValueError("safe_filename: max_length must be >= 16")
    stem, ext = _split(name)
    if allowed_extensions is not None:
        allowed = {e.lower().lstrip(".") for e in allowed_extensions}
        if ext not in allowed:
            shown = ext or "(none)"
            raise UnsafeFilenameError(
                f"file extension {shown!r} is not allowed; allowed: {sorted(allowed)}"
            )
    stem = stem or default_stem
    if stem.lower().split(".")[0] in _RESERVED:
        stem = f"_{stem}"
    if random_prefix:
        stem = f"{secrets.token_hex(8)}_{stem}"
    suffix = f".{ext}"[: max_length // 2] if ext else ""
    trimmed = stem[: max_length - len(suffix)].rstrip("._-")
    return (trimmed or default_stem[: max_length // 2]) + suffix
