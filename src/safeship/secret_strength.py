"""How guessable a secret is: an estimate of its entropy in bits, with no dictionary download.

The estimate charges each character ``log2(pool)`` bits, where the pool is the union of the
character classes the secret uses (16 when it is all hexadecimal), and charges nothing for
what an attacker's guesser predicts: a character continuing a run of constant step
(``aaaa``, ``abcd``, ``9876``, ``qwer``), a repeat of text seen earlier in the secret
(``abcdefgh`` four times costs one character more than once) and a default-looking word.
Random tokens (``secrets.token_urlsafe(32)``: ~250 bits estimated) pass easily; patterns fail.
"""

from __future__ import annotations

import math
import string

#: The least estimated entropy a production secret may have.
MIN_SECRET_BITS = 100
#: The least length a production secret may have (a random 32-character token).
MIN_SECRET_LENGTH = 32
#: How to make a good secret, for error messages.
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
#: Words that mark a default or example value; each costs one character, not its length.
WEAK_WORDS = (
    "secret",
    "admin",
    "changeme",
    "change-me",
    "password",
    "default",
    "example",
    "test",
    "1234",
    "qwerty",
    "letmein",
    "dev",
)
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_POSITION = {
    ch: (row, col) for row, keys in enumerate(_KEYBOARD_ROWS) for col, ch in enumerate(keys)
}
_MIN_REPEAT = 3  # a repeat shorter than this is not cheaper to guess
_MAX_STEP = 2  # runs of a constant step up to this size (``aceg`` too) are patterns
_CLASSES = (
    (frozenset(string.ascii_lowercase), 26),
    (frozenset(string.ascii_uppercase), 26),
    (frozenset(string.digits), 10),
    (frozenset(string.punctuation + " "), 33),
)
_HEX = frozenset(string.hexdigits)
_KNOWN = frozenset().union(*(members for members, _ in _CLASSES))
#: Only this much of a secret is examined (the rest is assumed as random as the start).
_MAX_EXAMINED = 1024


def estimate_bits(value: str) -> float:
    """The estimated entropy of ``value`` in bits (see the module docstring)."""
    if not value:
        return 0.0
    examined = value[:_MAX_EXAMINED]
    unpredictable = _unpredictable_characters(examined) + len(value) - len(examined)
    return unpredictable * math.log2(_pool_size(value))


def _pool_size(value: str) -> int:
    chars = set(value)
    pool = sum(size for members, size in _CLASSES if chars & members)
    if not chars <= _KNOWN:
        pool += 100  # other characters: a generous, fixed allowance
    if chars <= _HEX:
        pool = min(pool, 16)
    return max(pool, 2)


def _unpredictable_characters(value: str) -> int:
    """How many characters of ``value`` a pattern-aware guesser cannot predict."""
    lowered = value.lower()
    count = 0
    index = 0
    while index < len(value):
        skip = _word_at(lowered, index) or _repeat_at(value, index)
        if skip:
            count += 1  # choosing the word or the earlier text to copy
            index += skip
        elif index >= 2 and _continues_run(lowered, index):
            index += 1
        else:
            count += 1
            index += 1
    return count


def _word_at(lowered: str, index: int) -> int:
    for word in WEAK_WORDS:
        if lowered.startswith(word, index):
            return len(word)
    return 0


def _repeat_at(value: str, index: int) -> int:
    """The length of the longest earlier text (at least `_MIN_REPEAT`) repeated at ``index``."""
    seed = value[index : index + _MIN_REPEAT]
    if len(seed) < _MIN_REPEAT:
        return 0
    best = 0
    start = value.find(seed, 0, index + _MIN_REPEAT - 1)
    while 0 <= start < index:
        length = _MIN_REPEAT
        while index + length < len(value) and value[start + length] == value[index + length]:
            length += 1
        best = max(best, length)
        start = value.find(seed, start + 1, index + _MIN_REPEAT - 1)
    return best


def _continues_run(lowered: str, index: int) -> bool:
    """Whether the character at ``index`` keeps the step of the two before it."""
    a, b, c = lowered[index - 2], lowered[index - 1], lowered[index]
    step = ord(b) - ord(a)
    if abs(step) <= _MAX_STEP and ord(c) - ord(b) == step:
        return True
    pa, pb, pc = (_ROW_POSITION.get(ch) for ch in (a, b, c))
    if pa is None or pb is None or pc is None or not pa[0] == pb[0] == pc[0]:
        return False
    key_step = pb[1] - pa[1]
    return abs(key_step) == 1 and pc[1] - pb[1] == key_step


def weakness(value: str) -> str | None:
    """Why ``value`` is unfit as a production secret, or None when it looks strong."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    bits = estimate_bits(value)
    if bits < MIN_SECRET_BITS:
        return (
            f"is too guessable (about {int(bits)} bits of entropy estimated, "
            f"{MIN_SECRET_BITS} needed: repeats, sequences or default-looking words)"
        )
    return None
