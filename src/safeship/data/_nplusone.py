"""The N+1 detector: the same statement from the same line, many times in one unit of work.

One listener on SQLAlchemy's ``Engine`` class (so every engine, sync or async, ORM or Core)
hands each statement to the unit of work active in the current context, if any: a ``with``
block, an HTTP request (``NPlusOneMiddleware``) or a job (``detector.job``).  A unit counts
statements by (fingerprint, call site); at its end, each pair seen ``threshold`` times or
more is a finding.  In ``raise`` mode the unit raises :class:`NPlusOneError` (for tests);
in ``log`` mode a sampled share of units logs ``data.n_plus_one`` and counts a metric.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, Literal, ParamSpec, TypeVar

import sqlalchemy as sa

from safeship.data._errors import BatchConfigError, NPlusOneError
from safeship.data._fingerprint import (
    call_site,
    fingerprint,
    lazy_relationship,
    suggest_fix,
    user_stack,
)

__all__ = [
    "AllowEntry",
    "Finding",
    "NPlusOneDetector",
    "NPlusOneMiddleware",
    "detect_n_plus_one",
]

log = logging.getLogger("safeship.data.nplusone")
Mode = Literal["raise", "log"]
P = ParamSpec("P")
R = TypeVar("R")

#: Distinct (fingerprint, site) pairs one unit tracks; more are not counted.
MAX_KEYS_PER_UNIT = 1000
_MAX_SITE_LABELS = 200
_FINGERPRINTS: dict[str, str] = {}
_MAX_FINGERPRINTS = 4096


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """A known repeated statement to let pass until ``expires`` (a date, or ``None``).

    ``match`` is a piece of the statement's fingerprint or of its call site; ``reason``
    is required, so the next reader knows why it is allowed.
    """

    match: str
    reason: str
    expires: date | None = None

    def __post_init__(self) -> None:
        if not self.match.strip():
            raise BatchConfigError("an allowlist entry needs a non-empty match")
        if not self.reason.strip():
            raise BatchConfigError(f"allowlist entry {self.match!r} needs a reason")

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires

    def matches(self, finding: Finding) -> bool:
        return self.match in finding.statement or self.match in finding.site


@dataclass(frozen=True, slots=True)
class Finding:
    """One statement repeated from one place in one unit of work."""

    unit: str
    statement: str
    site: str
    count: int
    stack: tuple[str, ...]
    suggestion: str

    def describe(self) -> str:
        stack = "\n".join(f"    {line}" for line in self.stack)
        return (
            f"N+1 in {self.unit}: {self.count} x {self.statement}\n"
            f"  from {self.site}\n  fix: {self.suggestion}\n  stack:\n{stack}"
        )


@dataclass
class _Unit:
    detector: NPlusOneDetector
    name: str
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    details: dict[tuple[str, str], tuple[tuple[str, ...], str]] = field(default_factory=dict)

    def record(self, statement: str) -> None:
        shape = _FINGERPRINTS.get(statement)
        if shape is None:
            shape = fingerprint(statement)
            if len(_FINGERPRINTS) < _MAX_FINGERPRINTS:
                _FINGERPRINTS[statement] = shape
        frame = sys._getframe(2)
        key = (shape, call_site(frame))
        seen = self.counts.get(key)
        if seen is None and len(self.counts) >= MAX_KEYS_PER_UNIT:
            return
        seen = (seen or 0) + 1
        self.counts[key] = seen
        if seen == self.detector.threshold:  # the stack, once, when it becomes a finding
            fix = suggest_fix(shape, lazy_relationship(frame))
            self.details[key] = (user_stack(frame), fix)

    def findings(self) -> list[Finding]:
        out = []
        for key, count in self.counts.items():
            if count >= self.detector.threshold:
                stack, fix = self.details[key]
                out.append(Finding(self.name, key[0], key[1], count, stack, fix))
        return out


_CURRENT: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(
    "safeship_n_plus_one_unit", default=None
)
_install_lock = threading.Lock()
_installed = False


def _before_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    unit = _CURRENT.get()
    if unit is not None:
        unit.record(statement)


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sa.event.listen(sa.Engine, "before_cursor_execute", _before_cursor_execute)
            _installed = True


@cache
def _metric() -> Any:
    from prometheus_client import Counter

    return Counter(
        "safeship_data_n_plus_one_total",
        "Units of work where one statement ran repeatedly from one call site, by site.",
        ["site"],
    )


class NPlusOneDetector:
    """Find N+1 loops per unit of work: ``raise`` in tests, ``log`` (sampled) in production."""

    def __init__(
        self,
        *,
        mode: Mode = "log",
        threshold: int = 5,
        sample_rate: float = 1.0,
        allowlist: Iterable[AllowEntry] = (),
        today: Callable[[], date] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if mode not in ("raise", "log"):
            raise BatchConfigError(f"mode must be 'raise' or 'log', got {mode!r}")
        if not 2 <= threshold <= 10_000:
            raise BatchConfigError(f"threshold must be 2..10000, got {threshold!r}")
        if not 0.0 <= sample_rate <= 1.0:
            raise BatchConfigError(f"sample_rate must be 0..1, got {sample_rate!r}")
        self.mode: Mode = mode
        self.threshold = threshold
        self.sample_rate = sample_rate
        self.allowlist = tuple(allowlist)
        self._today = today or (lambda: datetime.now(UTC).date())
        self._rng = rng
        self._used: set[AllowEntry] = set()
        self._sites: set[str] = set()
        _install()

    @contextlib.contextmanager
    def unit(self, name: str = "unit") -> Iterator[None]:
        """Watch the statements of this block (and what it awaits) as one unit of work."""
        if self.mode == "log" and self.sample_rate < 1.0 and self._rng() >= self.sample_rate:
            yield
            return
        unit = _Unit(self, name)
        token = _CURRENT.set(unit)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _CURRENT.reset(token)
            if not failed:
                self._report(unit.findings())

    def job(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a job (sync or async) so each run is one unit of work."""
        name = getattr(fn, "__qualname__", "job")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self.unit(name):
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self.unit(name):
                return fn(*args, **kwargs)

        return run

    def _report(self, findings: list[Finding]) -> None:
        today = self._today()
        kept = []
        for finding in findings:
            entry = next(
                (e for e in self.allowlist if not e.expired(today) and e.matches(finding)), None
            )
            if entry is not None:
                self._used.add(entry)
            else:
                kept.append(finding)
        if not kept:
            return
        if self.mode == "raise":
            raise NPlusOneError("\n\n".join(f.describe() for f in kept))
        for finding in kept:
            self._count(finding.site)
            log.warning(
                "data.n_plus_one",
                extra={
                    "unit": finding.unit,
                    "statement": finding.statement[:500],
                    "site": finding.site,
                    "count": finding.count,
                    "suggestion": finding.suggestion,
                    "stack": list(finding.stack),
                },
            )

    def _count(self, site: str) -> None:
        if site not in self._sites and len(self._sites) >= _MAX_SITE_LABELS:
            site = "other"
        self._sites.add(site)
        _metric().labels(site).inc()

    def stale_entries(self) -> list[tuple[AllowEntry, str]]:
        """Allowlist entries to remove: ``expired``, or ``unused`` (matched nothing so far)."""
        today = self._today()
        out = []
        for entry in self.allowlist:
            if entry.expired(today):
                out.append((entry, "expired"))
            elif entry not in self._used:
                out.append((entry, "unused"))
        return out


@contextlib.contextmanager
def detect_n_plus_one(
    *, threshold: int = 5, allowlist: Iterable[AllowEntry] = (), name: str = "block"
) -> Iterator[NPlusOneDetector]:
    """Raise :class:`NPlusOneError` at the end of the block if it ran an N+1 loop."""
    detector = NPlusOneDetector(mode="raise", threshold=threshold, allowlist=allowlist)
    with detector.unit(name):
        yield detector


class NPlusOneMiddleware:
    """Pure ASGI middleware: each HTTP request is one unit of work of ``detector``."""

    def __init__(self, app: Any, *, detector: NPlusOneDetector) -> None:
        self.app = app
        self.detector = detector

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        with self.detector.unit(f"{scope.get('method', '')} {scope.get('path', '')}"):
            await self.app(scope, receive, send)
