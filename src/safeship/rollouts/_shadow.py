"""Shadow experiments: the candidate runs beside legacy, only legacy's answer is used.

Nothing the candidate side does reaches the caller: its exceptions, its slowness, and the
exceptions of the comparator, cleaner, ignore rules and publisher are counted, never
raised (``raise_on_mismatch`` is the one opt-in, for tests).  Off the request path the
candidate runs on a worker thread fed by a bounded queue that drops, and counts, when full.

The queue is a ``collections.deque`` (append and popleft are atomic, no lock) and the
worker is woken through an ``Event`` only when it went idle, so the caller's cost is an
append and a flag check: a ``queue.Queue`` took a lock and notified a condition per call.
"""

from __future__ import annotations

import logging
import random
import reprlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safeship.errors import SafeshipError

__all__ = [
    "COUNTERS",
    "MismatchError",
    "ShadowDelta",
    "ShadowObservation",
    "ShadowOptions",
    "ShadowStats",
    "bounded_repr",
    "compact_diff",
    "safe_text",
]

logger = logging.getLogger("safeship.rollouts")


class MismatchError(SafeshipError, AssertionError):
    """Raised by a shadow run with ``raise_on_mismatch=True`` when the results differ."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowOptions:
    """How a rollout runs its candidate in shadow mode (validated at construction)."""

    sample: float = 1.0
    run_if: Callable[[Any], bool] | None = None
    compare: Callable[[Any, Any], bool] | None = None
    clean: Callable[[Any], Any] | None = None
    ignore: Sequence[Callable[[Any, Any], bool]] = ()
    publish: Callable[[ShadowObservation], None] | None = None
    timeout: float = 1.0
    off_path: bool = True
    queue_size: int = 1_000
    randomize_order: bool = True
    raise_on_mismatch: bool = False
    keep_mismatches: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ValueError(f"sample: a fraction of calls between 0 and 1, got {self.sample}")
        if not 0.0 < self.timeout <= 300.0:
            raise ValueError(f"timeout: seconds in (0, 300], got {self.timeout}")
        if not 1 <= self.queue_size <= 1_000_000:
            raise ValueError(f"queue_size: 1 to 1,000,000, got {self.queue_size}")
        if not 0 <= self.keep_mismatches <= 1_000:
            raise ValueError(f"keep_mismatches: 0 to 1,000, got {self.keep_mismatches}")
        if self.raise_on_mismatch and self.off_path:
            raise ValueError("raise_on_mismatch needs off_path=False (it raises in the caller)")


@dataclass(frozen=True, slots=True)
class ShadowObservation:
    """One shadow comparison, as handed to ``publish`` and kept for mismatches."""

    at: datetime
    matched: bool
    ignored: bool
    control: Any
    candidate: Any
    candidate_error: str | None
    candidate_seconds: float
    context: Any
    diff: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "matched": self.matched,
            "ignored": self.ignored,
            "control": bounded_repr(self.control),
            "candidate": bounded_repr(self.candidate),
            "candidate_error": _capped(self.candidate_error, 300),
            "candidate_ms": round(self.candidate_seconds * 1000, 3),
            "context": bounded_repr(self.context),
            "diff": _capped(self.diff, 1000),
        }


@dataclass(slots=True)
class ShadowStats:
    """Counters of one rollout's shadow runs (read them with ``snapshot()``)."""

    runs: int = 0
    matches: int = 0
    mismatches: int = 0
    ignored: int = 0
    candidate_errors: int = 0
    timeouts: int = 0
    hook_errors: int = 0
    dropped: int = 0
    samples: deque[ShadowObservation] = field(default_factory=lambda: deque(maxlen=20))

    def snapshot(self) -> dict[str, Any]:
        compared = self.matches + self.mismatches
        return {
            "runs": self.runs,
            "matches": self.matches,
            "mismatches": self.mismatches,
            "ignored": self.ignored,
            "candidate_errors": self.candidate_errors,
            "timeouts": self.timeouts,
            "hook_errors": self.hook_errors,
            "dropped": self.dropped,
            "mismatch_rate": self.mismatches / compared if compared else None,
            "samples": [s.to_dict() for s in list(self.samples)],
        }


#: The counters a shadow runner ships (and the stored totals' columns).
COUNTERS = ("runs", "matches", "mismatches", "ignored", "candidate_errors", "timeouts",
            "hook_errors", "dropped")  # fmt: skip


SHIP_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class ShadowDelta:
    """What one rollout's shadow runs added since the last ``ShadowRunner.drain()``: the
    counters (keys of ``COUNTERS``) and up to ``limit`` newest kept observations as
    JSON-safe dicts with every string capped."""

    counts: dict[str, int]
    samples: list[dict[str, Any]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_text(text: str, limit: int) -> str:
    """``text`` capped at ``limit`` characters and storable anywhere: no NUL, no lone
    surrogates (PostgreSQL and UTF-8 encoders refuse both)."""
    text = _clip(text, limit)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _clip(text, limit)


def _capped(text: str | None, limit: int) -> str | None:
    return None if text is None else safe_text(text, limit)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 400
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 30
_REPR.maxlevel = 4


def bounded_repr(value: Any, limit: int = 300) -> str:
    """A bounded repr: a huge value costs no more than its first items, and a ``__repr__``
    that raises gives a placeholder instead of an exception."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - user values may have a broken __repr__
        text = f"<unrepresentable {type(value).__name__}>"
    return safe_text(text, limit)


def compact_diff(control: Any, candidate: Any, *, limit: int = 300) -> str:
    """A one-line description of how two cleaned values differ."""
    if isinstance(control, Mapping) and isinstance(candidate, Mapping):
        parts = []
        for key in sorted(set(control) | set(candidate), key=repr):
            if key not in candidate:
                parts.append(f"-{key!r}")
            elif key not in control:
                parts.append(f"+{key!r}")
            elif control[key] != candidate[key]:
                was, now = bounded_repr(control[key], 60), bounded_repr(candidate[key], 60)
                parts.append(f"{key!r}: {was} → {now}")
        return _clip("; ".join(parts), limit)
    if isinstance(control, list | tuple) and isinstance(candidate, list | tuple):
        if len(control) != len(candidate):
            return f"length {len(control)} → {len(candidate)}"
        for i, (a, b) in enumerate(zip(control, candidate, strict=True)):
            if a != b:
                return _clip(f"[{i}]: {bounded_repr(a, 100)} → {bounded_repr(b, 100)}", limit)
    return _clip(f"{bounded_repr(control, 140)} → {bounded_repr(candidate, 140)}", limit)


class ShadowRunner:
    """Compares candidate with control for one rollout; owns the off-path worker."""

    def __init__(self, name: str, options: ShadowOptions, *, rng: random.Random) -> None:
        self.name = name
        self.options = options
        self.stats = ShadowStats(samples=deque(maxlen=max(options.keep_mismatches, 1)))
        #: Kept observations not yet handed to ``drain()`` (the newest few only).
        self._pending: deque[ShadowObservation] = deque(maxlen=self._pending_limit())
        self._shipped = dict.fromkeys(COUNTERS, 0)
        self._rng = rng
        self._lock = threading.Lock()
        self._items: deque[tuple[Callable[..., Any], Any, Any, Any, Any]] = deque()
        self._limit = options.queue_size
        self._wake = threading.Event()
        self._idle_changed = threading.Condition()
        self._idle = False
        self._closing = False
        self._worker: threading.Thread | None = None

    def _pending_limit(self) -> int:
        return min(SHIP_SAMPLES, self.options.keep_mismatches)

    def drain(self) -> ShadowDelta | None:
        """Counters added since the last drain and the newest kept observations (at most
        ``SHIP_SAMPLES``), or None when nothing happened: what the guard agent ships."""
        with self._lock:
            totals = {k: int(getattr(self.stats, k)) for k in COUNTERS}
            pending, self._pending = self._pending, deque(maxlen=self._pending_limit())
            counts = {k: totals[k] - self._shipped[k] for k in COUNTERS}
            self._shipped = totals
        if not any(counts.values()) and not pending:
            return None
        return ShadowDelta(counts=counts, samples=[o.to_dict() for o in pending])

    def wanted(self, context: Any) -> bool:
        """Should this call be shadowed (sampling and ``run_if``)?"""
        o = self.options
        if o.sample < 1.0 and self._rng.random() >= o.sample:
            return False
        if o.run_if is None:
            return True
        try:
            return bool(o.run_if(context))
        except Exception:  # noqa: BLE001 - a faulty hook never reaches the caller
            self._count("hook_errors")
            return False

    def submit(
        self, candidate: Callable[..., Any], args: Any, kwargs: Any, control: Any, context: Any
    ) -> None:
        """Queue ``candidate(*args, **kwargs)`` off the request path, or drop and count when
        full.  Concurrent callers may overshoot ``queue_size`` by at most one item each.

        The item is a flat tuple, not a closure: the garbage collector stops tracking a
        tuple of plain values, while closures queued by the thousand made every collection
        rescan them (that, not the append, was most of the caller's cost)."""
        if self._worker is None:
            self._start()
        items = self._items
        if len(items) >= self._limit:
            self._count("dropped")
            return
        items.append((candidate, args, kwargs, control, context))
        if self._idle:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._closing = False
                self._worker = threading.Thread(
                    target=self._drain, name=f"safeship-shadow-{self.name}", daemon=True
                )
                self._worker.start()

    def _drain(self) -> None:
        items = self._items
        while True:
            while items:
                try:
                    self._run_queued(*items.popleft())
                except Exception:  # the worker must outlive any one comparison
                    logger.exception("rollout.shadow_worker_error", extra={"rollout": self.name})
            if self._closing:
                return
            self._wake.clear()
            self._set_idle(True)
            if not items and not self._closing:  # re-check: a caller may have missed idle
                self._wake.wait()
            self._set_idle(False)

    def _set_idle(self, idle: bool) -> None:
        with self._idle_changed:
            self._idle = idle
            self._idle_changed.notify_all()

    def join(self) -> None:
        """Wait until every queued candidate run has been compared (tests, shutdown)."""
        if self._worker is None:
            return
        with self._idle_changed:
            self._idle_changed.wait_for(lambda: self._idle and not self._items)

    def close(self) -> None:
        """Compare what is queued, then stop the worker (a later call starts a new one)."""
        worker = self._worker
        if worker is not None:
            self._closing = True
            self._wake.set()
            worker.join(5)
            self._worker = None

    def _run_queued(
        self, candidate: Callable[..., Any], args: Any, kwargs: Any, control: Any, context: Any
    ) -> None:
        started = time.perf_counter()
        try:
            value, error = candidate(*args, **kwargs), None
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is data
            value, error = None, exc
        self.compare(control, value, error, time.perf_counter() - started, context)

    def run_and_compare(self, run_candidate: Callable[[], Any], control: Any, context: Any) -> None:
        """Run the candidate now (sync) and compare; never raises except on an opt-in
        mismatch."""
        started = time.perf_counter()
        try:
            value, error = run_candidate(), None
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is data
            value, error = None, exc
        self.compare(control, value, error, time.perf_counter() - started, context)

    def compare(
        self,
        control: Any,
        candidate: Any,
        error: BaseException | None,
        seconds: float,
        context: Any,
    ) -> None:
        o = self.options
        timed_out = isinstance(error, TimeoutError) or seconds > o.timeout
        matched, ignored, diff = False, False, None
        if error is None:
            try:
                a = o.clean(control) if o.clean else control
                b = o.clean(candidate) if o.clean else candidate
                matched = bool(o.compare(a, b)) if o.compare else a == b
                if matched and o.publish is None:
                    self._tally_match(timed_out)  # nobody reads the observation: skip it
                    return
                if not matched:
                    ignored = any(rule(a, b) for rule in o.ignore)
                    diff = compact_diff(a, b)
            except Exception:  # noqa: BLE001 - hooks never reach the caller
                self._count("hook_errors")
                return
        observation = ShadowObservation(
            at=datetime.now(UTC), matched=matched, ignored=ignored, control=control,
            candidate=candidate, candidate_error=None if error is None else bounded_repr(error),
            candidate_seconds=seconds, context=context, diff=diff,
        )  # fmt: skip
        self._tally(observation, error is not None, timed_out)
        self._publish(observation)
        if o.raise_on_mismatch and error is None and not matched and not ignored:
            raise MismatchError(f"rollout {self.name!r}: candidate differs: {diff}")

    def _tally_match(self, timed_out: bool) -> None:
        with self._lock:
            s = self.stats
            s.runs += 1
            s.timeouts += timed_out
            s.matches += 1

    def _tally(self, observation: ShadowObservation, failed: bool, timed_out: bool) -> None:
        with self._lock:
            s = self.stats
            s.runs += 1
            s.timeouts += timed_out
            if failed:
                s.candidate_errors += 1
                s.samples.append(observation)
                self._pending.append(observation)
            elif observation.matched:
                s.matches += 1
            elif observation.ignored:
                s.ignored += 1
            else:
                s.mismatches += 1
                s.samples.append(observation)
                self._pending.append(observation)

    def _publish(self, observation: ShadowObservation) -> None:
        if self.options.publish is None:
            return
        try:
            self.options.publish(observation)
        except Exception:  # noqa: BLE001 - a faulty publisher never reaches the caller
            self._count("hook_errors")

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
