"""Regular expressions of ``REGEX`` constraints, in the dialect Unleash's engines accept.

Unleash validates patterns for an RE2-style engine: no look-around, no back-references,
inline flags (``(?i)``) allowed anywhere, POSIX classes (``[[:alpha:]]``), ``\\z`` for the
end of text, and ``$`` that matches only at the very end unless ``(?m)`` is on. Python's
``re`` differs on each of those points, so a pattern is translated once, at compile time,
into an equivalent ``re`` pattern; what has no equivalent is refused with ``PatternError``
and the rule that holds it evaluates as off.

Python's engine backtracks, so a pattern with nested repetition (``(a+)+``) can be slow
on hostile input where RE2 is not; keep rule patterns simple.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from safeship.errors import SafeshipError

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_FLAG_GROUP = re.compile(r"\(\?([imsx]*(?:-[imsx]*)?)([:)])")
_NAMED_GROUP = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")
_HEX_BRACED = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


class PatternError(SafeshipError, ValueError):
    """A pattern that cannot be evaluated the way Unleash's engines evaluate it."""


def compile_pattern(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Translate and compile a rule's pattern; raises ``PatternError`` with the reason."""
    translated = translate(pattern)
    flags = re.IGNORECASE if ignore_case else 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return re.compile(translated, flags)
        except (re.error, Warning) as exc:
            raise PatternError(f"invalid regular expression {pattern!r}: {exc}") from None


@dataclass
class _Group:
    flags: set[str]
    wraps: int = 0
    branch_flags: list[str] = field(default_factory=list)


@dataclass
class _Translator:
    pattern: str
    out: list[str] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=lambda: [_Group(set())])
    pos: int = 0

    def run(self) -> str:
        while self.pos < len(self.pattern):
            self.step()
        self.close_wraps(self.groups[-1])
        return "".join(self.out)

    def step(self) -> None:
        char = self.pattern[self.pos]
        group = self.groups[-1]
        if char == "\\":
            self.escape(inside_class=False)
        elif char == "[":
            self.char_class()
        elif char == "(":
            self.open_group()
        elif char == ")":
            self.close_group()
        elif char == "|":
            self.close_wraps(group)
            self.emit("|", 1)
            self.reopen_wraps(group)
        elif char == "$":
            self.emit("$" if "m" in group.flags else r"\Z", 1)
        elif char == "#" and "x" in group.flags:
            end = self.pattern.find("\n", self.pos)
            self.pos = len(self.pattern) if end < 0 else end
        else:
            self.emit(char, 1)

    def emit(self, text: str, consumed: int) -> None:
        self.out.append(text)
        self.pos += consumed

    def escape(self, *, inside_class: bool) -> None:
        rest = self.pattern[self.pos + 1 : self.pos + 2]
        if not rest:
            raise PatternError("the pattern ends with a lone backslash")
        if rest in "123456789":
            raise PatternError("back-references (\\1) are not supported")
        if rest in "pPQEZ":
            raise PatternError(f"\\{rest} is not supported")
        hex_braced = _HEX_BRACED.match(self.pattern, self.pos)
        if hex_braced:
            self.emit(f"\\U{int(hex_braced.group(1), 16):08X}", hex_braced.end() - self.pos)
        elif rest == "z" and not inside_class:
            self.emit(r"\Z", 2)
        else:
            self.emit("\\" + rest, 2)

    def char_class(self) -> None:
        self.emit("[", 1)
        if self.pattern.startswith("^", self.pos):
            self.emit("^", 1)
        if self.pattern.startswith("]", self.pos):
            self.emit(r"\]", 1)
        while self.pos < len(self.pattern):
            if self.class_step():
                return
        raise PatternError("a character class is not closed with ']'")

    def class_step(self) -> bool:
        char = self.pattern[self.pos]
        pair = self.pattern[self.pos : self.pos + 2]
        if char == "]":
            self.emit("]", 1)
            return True
        if char == "\\":
            self.escape(inside_class=True)
        elif char == "[":
            self.posix_class()
        elif pair in ("&&", "--", "~~"):
            raise PatternError(f"set operations ({pair}) in a character class are not supported")
        elif pair == "||":
            self.emit(r"|\|", 2)
        else:
            self.emit(char, 1)
        return False

    def posix_class(self) -> None:
        end = self.pattern.find(":]", self.pos)
        name = self.pattern[self.pos + 2 : end] if self.pattern.startswith("[:", self.pos) else ""
        if end < 0 or name not in _POSIX_CLASSES:
            raise PatternError("nested character classes are not supported")
        self.emit(_POSIX_CLASSES[name], end + 2 - self.pos)

    def open_group(self) -> None:
        if not self.pattern.startswith("(?", self.pos):
            self.push_group("(", 1)
            return
        named = _NAMED_GROUP.match(self.pattern, self.pos)
        if named:
            self.push_group(f"(?P<{named.group(1)}>", named.end() - self.pos)
            return
        if self.pattern.startswith("(?:", self.pos):
            self.push_group("(?:", 3)
            return
        flag_group = _FLAG_GROUP.match(self.pattern, self.pos)
        if flag_group is None or flag_group.group(1) in ("", "-"):
            snippet = self.pattern[self.pos : self.pos + 4]
            raise PatternError(
                f"the group {snippet!r}... is not supported (no look-around, (?#, (?U or (?>)"
            )
        spec, kind = flag_group.groups()
        flags = _apply_flags(set(self.groups[-1].flags), spec)
        if kind == ":":
            self.push_group(f"(?{spec}:", flag_group.end() - self.pos, flags)
            return
        group = self.groups[-1]
        group.flags = flags
        group.wraps += 1
        group.branch_flags.append(spec)
        self.emit(f"(?{spec}:", flag_group.end() - self.pos)

    def push_group(self, text: str, consumed: int, flags: set[str] | None = None) -> None:
        self.groups.append(_Group(set(self.groups[-1].flags) if flags is None else flags))
        self.emit(text, consumed)

    def close_group(self) -> None:
        if len(self.groups) == 1:
            raise PatternError("unbalanced ')'")
        self.close_wraps(self.groups.pop())
        self.emit(")", 1)

    def close_wraps(self, group: _Group) -> None:
        self.out.append(")" * group.wraps)
        group.wraps = 0

    def reopen_wraps(self, group: _Group) -> None:
        for spec in group.branch_flags:
            self.out.append(f"(?{spec}:")
        group.wraps = len(group.branch_flags)


def _apply_flags(flags: set[str], spec: str) -> set[str]:
    on, _, off = spec.partition("-")
    return (flags | set(on)) - set(off)


def translate(pattern: str) -> str:
    """The ``re`` pattern equivalent to an Unleash rule pattern; raises ``PatternError``."""
    return _Translator(pattern).run()
