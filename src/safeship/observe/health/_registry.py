"""The health registry: runs component checks with timeouts, caching and shared runs."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from safeship.observe.health._model import (
    KINDS,
    Check,
    CheckFn,
    CheckResult,
    HealthReport,
)

logger = logging.getLogger("safeship.health")


@dataclass(slots=True)
class _CacheEntry:
    result: CheckResult
    expires_at: float


class HealthRegistry:
    """Component checks for liveness, readiness and startup probes.

    Each check result is cached for its ``cache_ttl`` so frequent probes never hammer a
    dependency, and concurrent probes share one in-flight run per check.
    """

    def __init__(
        self,
        *,
        service_id: str | None = None,
        version: str | None = None,
        description: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks: dict[str, Check] = {}
        self._cache: dict[str, _CacheEntry] = {}
        self._inflight: dict[str, asyncio.Task[CheckResult]] = {}
        self._not_ready_reason: str | None = None
        self._clock = clock
        self.service_id = service_id
        self.version = version
        self.description = description

    def add(
        self,
        name: str,
        fn: CheckFn,
        *,
        timeout: float = 2.0,
        cache_ttl: float = 5.0,
        kinds: Iterable[str] = ("readiness",),
        critical: bool = True,
        component_type: str | None = None,
    ) -> Check:
        """Register a check; ``kinds`` says which probes run it."""
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is already registered")
        check = Check(
            name=name,
            fn=fn,
            timeout=timeout,
            cache_ttl=cache_ttl,
            kinds=frozenset(kinds),
            critical=critical,
            component_type=component_type,
        )
        self._checks[name] = check
        return check

    def remove(self, name: str) -> None:
        """Unregister a check (no error when it is absent)."""
        self._checks.pop(name, None)
        self._cache.pop(name, None)

    @property
    def checks(self) -> tuple[Check, ...]:
        """The registered checks, in registration order."""
        return tuple(self._checks.values())

    def mark_not_ready(self, reason: str = "shutting down") -> None:
        """Make readiness fail at once (graceful shutdown), without running checks."""
        self._not_ready_reason = reason

    def mark_ready(self) -> None:
        """Undo `mark_not_ready`."""
        self._not_ready_reason = None

    @property
    def not_ready_reason(self) -> str | None:
        """Why readiness is forced to fail, or None."""
        return self._not_ready_reason

    async def run(self, kind: str) -> HealthReport:
        """Run (or reuse cached results of) every check registered for ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        if kind == "readiness" and self._not_ready_reason is not None:
            return self._report(kind, "fail", {}, output=self._not_ready_reason)
        selected = [c for c in self._checks.values() if kind in c.kinds]
        results = await asyncio.gather(*(self._result(c) for c in selected))
        by_name = {c.name: (r, c.critical) for c, r in zip(selected, results, strict=True)}
        status = HealthReport.aggregate(by_name)
        return self._report(kind, status, {n: r for n, (r, _) in by_name.items()})

    def _report(
        self, kind: str, status: Any, checks: dict[str, CheckResult], output: str | None = None
    ) -> HealthReport:
        return HealthReport(
            kind=kind,
            status=status,
            checks=checks,
            output=output,
            service_id=self.service_id,
            version=self.version,
            description=self.description,
        )

    async def _result(self, check: Check) -> CheckResult:
        entry = self._cache.get(check.name)
        if entry is not None and entry.expires_at > self._clock():
            return entry.result
        loop = asyncio.get_running_loop()
        task = self._inflight.get(check.name)
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._execute(check))
            self._inflight[check.name] = task
        return await asyncio.shield(task)

    async def _execute(self, check: Check) -> CheckResult:
        started = self._clock()
        result = await run_check(check)
        if check.cache_ttl > 0 and self._checks.get(check.name) is check:
            self._cache[check.name] = _CacheEntry(result, started + check.cache_ttl)
        if result.status != "pass":
            logger.warning(
                "health.check_failed",
                extra={"check": check.name, "status": result.status, "output": result.output},
            )
        return result


async def run_check(check: Check) -> CheckResult:
    """Run one check once, bounded by its timeout; never raises, never hangs."""
    started = time.perf_counter()
    try:
        value = await _call_with_timeout(check.fn, check.timeout)
    except TimeoutError:
        return _result(check, "fail", started, output=f"timed out after {check.timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - a failing check is data, not a probe error
        return _result(check, "fail", started, output=_describe(exc))
    if isinstance(value, CheckResult):
        return value
    observed = None if value is None else str(value)
    return _result(check, "pass", started, observed=observed)


def _result(
    check: Check, status: Any, started: float, *, output: str | None = None, observed: Any = None
) -> CheckResult:
    return CheckResult(
        status=status,
        output=output,
        observed_value=observed,
        component_type=check.component_type,
        duration_seconds=time.perf_counter() - started,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _call_with_timeout(fn: CheckFn, limit: float) -> Any:
    """Await ``fn`` (async, or sync in a daemon thread) for at most ``limit`` seconds.

    On timeout the work is abandoned, not awaited: a check that ignores cancellation or
    blocks in a thread cannot hang the probe or the interpreter's shutdown.
    """
    awaitable = fn() if _is_async(fn) else _in_daemon_thread(fn)
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        task.add_done_callback(_consume_result)
        raise TimeoutError
    return task.result()


def _is_async(fn: Any) -> bool:
    call = type(fn).__call__ if not inspect.isroutine(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _consume_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the check hung
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name="safeship-health-check", daemon=True).start()
    return future
