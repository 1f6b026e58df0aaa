"""Lock-free counts: ``itertools.count`` advanced with ``next()`` and read without advancing.

``next(count)`` is one C call the interpreter never interrupts halfway, so threads can count
on one object with no lock and no count is lost (an attribute ``+= 1`` can lose updates).
Reading goes through the documented ``repr`` (``"count(42)"``), which does not advance it.
"""

from __future__ import annotations

import itertools

__all__ = ["read_count"]


def read_count(counter: itertools.count[int]) -> int:
    """The next value of a ``count()`` started at 0: how many times ``next`` was called."""
    text = repr(counter)
    return int(text[text.index("(") + 1 : -1])
