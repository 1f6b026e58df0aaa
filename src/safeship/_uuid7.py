"""Time-ordered ids (UUID version 7) for outbox events and jobs.

Layout (RFC 9562): 48 bits of Unix milliseconds, the version (7), 12 bits, the variant,
62 bits.  The 74 bits after the clock are random, and within one process the ids only
ascend: an id drawn in the same millisecond as the one before it (or after the clock
stepped back) is the one before it plus a random step of up to 2**48, so it stays hard to
guess.  A lock makes the draw safe across threads, and a forked child drops its parent's
buffer of random bytes so the two never draw the same ones.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from array import array
from itertools import accumulate, repeat
from operator import or_, rshift

__all__ = ["uuid7", "uuid7s"]

_STEP = (1 << 48) - 1
_VERSION = 0x7 << 76 | 0x2 << 62
_RANDOM_MASK = ((1 << 80) - 1) & ~(0xF << 76 | 0x3 << 62)  # the 74 random bits' places
_LOW = (1 << 62) - 1

_lock = threading.Lock()
_random = bytearray()
_last = 0  # the last id this process drew, as an int


def _forget() -> None:
    # A fork copies only the forking thread: a lock another thread held stays held in the
    # child for good, so the child takes a new one.
    global _last, _lock
    _lock = threading.Lock()
    _random.clear()
    _last = 0


os.register_at_fork(after_in_child=_forget)


def _draw(size: int) -> bytes:
    """``size`` random bytes from the buffer (refilled with one system call per 4 KiB)."""
    if size <= 0:
        return b""
    if len(_random) < size:
        _random[:0] = os.urandom(max(4096, size))
    taken = bytes(_random[-size:])
    del _random[-size:]
    return taken


def _count(value: int) -> int:
    """An id as one 122-bit number (the clock, then the random bits), to step it."""
    return (value >> 80) << 74 | (value >> 64 & 0xFFF) << 62 | value & _LOW


def _id(count: int) -> int:
    return (count >> 74) << 80 | (count >> 62 & 0xFFF) << 64 | count & _LOW | _VERSION


def uuid7() -> uuid.UUID:
    """A new time-ordered id, after every id this process drew before it."""
    global _last
    stamp = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _VERSION
    with _lock:
        if len(_random) < 10:
            _random[:0] = os.urandom(4096)
        rand = int.from_bytes(_random[-10:])
        del _random[-10:]
        value = stamp | rand & _RANDOM_MASK
        if value <= _last:
            low = (_last & _LOW) + 1 + (rand & _STEP)
            value = _last & ~_LOW | low if low <= _LOW else _id(_count(_last) + 1 + (rand & _STEP))
        _last = value
    return uuid.UUID(int=value)


def uuid7s(count: int) -> list[uuid.UUID]:
    """``count`` new ids in ascending order, all after every id this process drew before
    them: a batch's ids sort in its order and each goes in at the right edge of an index
    on them, where PostgreSQL appends without descending the tree.

    The first id is drawn as :func:`uuid7` draws one; each next id is the one before plus
    a random step of up to 48 bits (fewer for batches over 4,096 ids, so that the whole
    batch fits in the id's last 62 bits), summed in C rather than drawn and sorted."""
    global _last
    if count <= 0:
        return []
    bits = max(8, min(48, 60 - count.bit_length()))
    stamp = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _VERSION
    with _lock:
        head = int.from_bytes(_draw(10))
        steps = array("Q", _draw(8 * (count - 1)))
        high = stamp | (head >> 62 & 0xFFF) << 64  # the clock, 12 random bits, the variant
        low = head & ((1 << 60) - 1)
        if high | low <= _last:  # this millisecond is taken up to _last: go on after it
            high, low = _last & ~_LOW, (_last & _LOW) + 1
        if low + (count << bits) <= _LOW:  # the batch fits in the last 62 bits
            sized = map(or_, map(rshift, steps, repeat(64 - bits)), repeat(1))  # 1 to 2**bits
            values = [high | value for value in accumulate(sized, initial=low)]
        else:  # it would carry into the 12 bits above: step the id as one number
            at = _count(high) + low
            values = [_id(at)]
            for step in steps:
                at += 1 + (step >> 16)
                values.append(_id(at))
        _last = values[-1]
    return [uuid.UUID(int=value) for value in values]
