"""Evaluation counts per flag, by result and by variant, with no lock on the evaluation path.

Every count is an ``itertools.count``; an evaluation advances one with ``next()``, a single
C call that the interpreter never interrupts halfway, so threads need no lock and no count
is lost. Reading never resets anything: ``drain()`` reads the running totals and returns
the difference since the previous drain, so an exporter can call it on a timer (and
``totals()`` gives the running totals, what a Prometheus counter wants).

Slots are keyed by flag name and outlive a snapshot: every ``FlagSet`` compiled with the
same counter (``FlagSet.from_unleash(state, counter=c)`` or ``flags.with_counter(c)``)
adds to the same counts, so swapping in a new snapshot loses nothing. The number of slots
is bounded by the flags and their variant names, never by users.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from safeship._counting import read_count
from safeship.flags._model import FrozenDict


@dataclass(frozen=True, slots=True)
class FlagCounts:
    """Evaluations of one flag: on, off, by variant name, failed (answered with the default)."""

    yes: int = 0
    no: int = 0
    variants: Mapping[str, int] = field(default_factory=FrozenDict)
    errors: int = 0

    @property
    def total(self) -> int:
        """Every evaluation counted, whatever its result."""
        return self.yes + self.no + self.errors


class FlagSlots:
    """The live counts of one flag; compiled evaluators hold their ``__next__`` methods."""

    __slots__ = ("errors", "no", "variants", "yes")

    def __init__(self) -> None:
        self.yes = itertools.count()
        self.no = itertools.count()
        self.errors = itertools.count()
        self.variants: dict[str, itertools.count[int]] = {}

    def read(self) -> FlagCounts:
        """The totals so far."""
        variants = {name: read_count(count) for name, count in list(self.variants.items())}
        return FlagCounts(
            read_count(self.yes), read_count(self.no), FrozenDict(variants), read_count(self.errors)
        )


class EvaluationCounter:
    """Counts evaluations of every flag of the snapshots compiled with it.

    >>> counter = EvaluationCounter()
    >>> flags = FlagSet.from_unleash(state, counter=counter)   # doctest: +SKIP
    >>> counter.drain()["checkout-v2"].yes                      # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, FlagSlots] = {}
        self._missing: dict[str, itertools.count[int]] = {}
        self._last: dict[str, FlagCounts] = {}
        self._last_missing: dict[str, int] = {}

    def slots(self, flag: str, variant_names: Iterable[str] = ()) -> FlagSlots:
        """The slots of a flag, created on first use, with a count for each variant name."""
        with self._lock:
            slots = self._flags.get(flag)
            if slots is None:
                slots = self._flags[flag] = FlagSlots()
            for name in variant_names:
                if name not in slots.variants:
                    slots.variants[name] = itertools.count()
            return slots

    def count_missing(self, flag: str) -> None:
        """Count a lookup of a flag the snapshot does not have."""
        count = self._missing.get(flag)
        if count is None:
            with self._lock:
                count = self._missing.setdefault(flag, itertools.count())
        next(count)

    def totals(self) -> dict[str, FlagCounts]:
        """Running totals per flag since the counter was created."""
        with self._lock:
            items = list(self._flags.items())
        return {name: slots.read() for name, slots in items}

    def missing(self) -> dict[str, int]:
        """How often each unknown flag name was asked for, since the counter was created."""
        with self._lock:
            items = list(self._missing.items())
        return {name: read_count(count) for name, count in items}

    def drain(self) -> dict[str, FlagCounts]:
        """Counts since the previous ``drain()``, for the flags evaluated in between."""
        with self._lock:
            items = list(self._flags.items())
            result = {}
            for name, slots in items:
                now = slots.read()
                delta = _difference(now, self._last.get(name, FlagCounts()))
                self._last[name] = now
                if delta.total:
                    result[name] = delta
            return result

    def drain_missing(self) -> dict[str, int]:
        """Lookups of unknown flags since the previous ``drain_missing()``."""
        with self._lock:
            totals = {name: read_count(count) for name, count in self._missing.items()}
            result = {
                name: total - self._last_missing.get(name, 0)
                for name, total in totals.items()
                if total != self._last_missing.get(name, 0)
            }
            self._last_missing = totals
            return result


def _difference(now: FlagCounts, before: FlagCounts) -> FlagCounts:
    variants = {
        name: count - before.variants.get(name, 0)
        for name, count in now.variants.items()
        if count != before.variants.get(name, 0)
    }
    return FlagCounts(
        now.yes - before.yes, now.no - before.no, FrozenDict(variants), now.errors - before.errors
    )
