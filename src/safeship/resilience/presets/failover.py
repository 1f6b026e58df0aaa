"""Provider failover: primary → secondary → … → local fallback, each behind its own breaker.

For dependencies with interchangeable providers — LLM APIs, payment gateways, SMS
senders — :class:`Failover` (sync) and :class:`AsyncFailover` try each provider in
order. A provider whose breaker is open is skipped without a call; one that fails (an
exception, or its timeout) is recorded and the next one is tried. When all are out, the
``fallback`` (say, a small local model) answers, or :class:`ProvidersExhausted` is raised
with every provider's error.

::

    ai = AsyncFailover(
        "ai",
        [
            Provider("openai", ask_openai, timeout=20),
            Provider("anthropic", ask_anthropic, timeout=20),
        ],
        fallback=ask_local_model,
    )
    answer = await ai.call(prompt)

Each provider's breaker is registered as ``<failover>:<provider>``. Per-provider call
outcomes and latency are exported to Prometheus at scrape time as
``safeship_provider_calls_total{failover,provider,outcome}`` (success, failure,
rejected) and ``safeship_provider_latency_seconds`` (a summary of successful calls).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, cast

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from safeship.errors import SafeshipError
from safeship.resilience import _default_registry as registry
from safeship.resilience._breaker import Breaker
from safeship.resilience._errors import BreakerOpen
from safeship.resilience._log import logger
from safeship.resilience._pipeline import pipeline

__all__ = ["AsyncFailover", "Failover", "Provider", "ProviderStats", "ProvidersExhausted"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Provider(Generic[P, R]):
    """One provider: a name, the function that calls it, and an optional timeout."""

    name: str
    call: Callable[P, R]
    timeout: float | None = None


@dataclass(slots=True)
class ProviderStats:
    """Running figures for one provider (read by the metrics collector)."""

    success: int = 0
    failure: int = 0
    rejected: int = 0
    latency_sum: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str, latency: float = 0.0) -> None:
        with self.lock:
            setattr(self, outcome, getattr(self, outcome) + 1)
            if outcome == "success":
                self.latency_sum += latency


class ProvidersExhausted(SafeshipError):  # noqa: N818 - names the situation, like StopIteration
    """Every provider failed or was shunned, and there was no fallback."""

    def __init__(self, failover: str, errors: dict[str, BaseException]) -> None:
        self.failover = failover
        self.errors = errors
        detail = "; ".join(f"{name}: {error!r}" for name, error in errors.items())
        super().__init__(f"failover {failover!r}: every provider failed ({detail})")


class _Core(Generic[P, R]):
    """Breakers, stats and logging shared by the sync and async failovers."""

    def __init__(
        self,
        name: str,
        providers: Sequence[Provider[P, Any]],
        fallback: Callable[P, Any] | None,
        breaker_options: dict[str, Any] | None,
    ) -> None:
        if not providers:
            raise ValueError("a failover needs at least one Provider")
        names = [provider.name for provider in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        self.name = name
        self.providers = tuple(providers)
        self.fallback = fallback
        options = dict(breaker_options or {})
        self.breakers = {p.name: _provider_breaker(f"{name}:{p.name}", options) for p in providers}
        self.stats = {provider.name: ProviderStats() for provider in providers}
        _FAILOVERS.add(self)
        _install_collector()

    def pipe_for(self, provider: Provider[P, Any]) -> Any:
        return pipeline(breaker=self.breakers[provider.name], timeout=provider.timeout)

    def failed(self, provider: str, exc: Exception, errors: dict[str, BaseException]) -> None:
        errors[provider] = exc
        outcome = "rejected" if isinstance(exc, BreakerOpen) else "failure"
        self.stats[provider].add(outcome)
        logger.info(
            "resilience.failover.provider_failed",
            extra={
                "failover": self.name,
                "provider": provider,
                "outcome": outcome,
                "error": repr(exc),
            },
        )

    def succeeded(self, provider: str, started: float, result: Any) -> Any:
        self.stats[provider].add("success", time.perf_counter() - started)
        return result

    def last_resort(self, errors: dict[str, BaseException]) -> Callable[P, Any]:
        """The fallback to answer with, or raise :class:`ProvidersExhausted`."""
        if self.fallback is None:
            raise ProvidersExhausted(self.name, errors)
        return self.fallback


class _Failover(Generic[P, R]):
    """What both failovers expose."""

    _core: _Core[P, Any]

    @property
    def breakers(self) -> dict[str, Breaker]:
        """Each provider's breaker, by provider name."""
        return self._core.breakers

    @property
    def stats(self) -> dict[str, ProviderStats]:
        """Each provider's running figures, by provider name."""
        return self._core.stats


class Failover(_Failover[P, R]):
    """Try sync providers in order; see the module docs."""

    def __init__(
        self,
        name: str,
        providers: Sequence[Provider[P, R]],
        *,
        fallback: Callable[P, R] | None = None,
        breaker_options: dict[str, Any] | None = None,
    ) -> None:
        self._core = _Core(name, providers, fallback, breaker_options)
        self._calls = [(p.name, self._core.pipe_for(p).wrap_sync(p.call)) for p in providers]

    def call(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The first provider's answer that succeeds, else the fallback's."""
        errors: dict[str, BaseException] = {}
        for name, call in self._calls:
            started = time.perf_counter()
            try:
                result: R = call(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any provider failure means: next one
                self._core.failed(name, exc, errors)
                continue
            return cast(R, self._core.succeeded(name, started, result))
        return cast(R, self._core.last_resort(errors)(*args, **kwargs))


class AsyncFailover(_Failover[P, R]):
    """Try async providers in order; see the module docs."""

    def __init__(
        self,
        name: str,
        providers: Sequence[Provider[P, Awaitable[R]]],
        *,
        fallback: Callable[P, Awaitable[R]] | None = None,
        breaker_options: dict[str, Any] | None = None,
    ) -> None:
        self._core = _Core(name, providers, fallback, breaker_options)
        self._calls = [(p.name, self._core.pipe_for(p).wrap_async(p.call)) for p in providers]

    async def call(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The first provider's answer that succeeds, else the fallback's."""
        errors: dict[str, BaseException] = {}
        for name, call in self._calls:
            started = time.perf_counter()
            try:
                result: R = await call(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any provider failure means: next one
                self._core.failed(name, exc, errors)
                continue
            return cast(R, self._core.succeeded(name, started, result))
        return cast(R, await self._core.last_resort(errors)(*args, **kwargs))


def _provider_breaker(name: str, options: dict[str, Any]) -> Breaker:
    return registry.get_or_create(name, lambda: Breaker(name, **{**options, "registry": None}))


_FAILOVERS: weakref.WeakSet[_Core[Any, Any]] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()


class ProviderCollector(Collector):
    """Exports every live failover's per-provider figures when scraped."""

    def collect(self) -> Iterator[Metric]:
        """Build the call counter and latency summary families."""
        calls = CounterMetricFamily(
            "safeship_provider_calls",
            "Failover provider calls by outcome.",
            labels=["failover", "provider", "outcome"],
        )
        latency = SummaryMetricFamily(
            "safeship_provider_latency_seconds",
            "Latency of successful failover provider calls.",
            labels=["failover", "provider"],
        )
        for core in list(_FAILOVERS):
            for provider, stats in core.stats.items():
                with stats.lock:
                    figures = (stats.success, stats.failure, stats.rejected, stats.latency_sum)
                for outcome, value in zip(
                    ("success", "failure", "rejected"), figures, strict=False
                ):
                    calls.add_metric([core.name, provider, outcome], value)
                latency.add_metric(
                    [core.name, provider], count_value=figures[0], sum_value=figures[3]
                )
        yield from (calls, latency)


def _install_collector() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            REGISTRY.register(ProviderCollector())
            _installed = True
