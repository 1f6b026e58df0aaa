"""Resilience policies — breaker, retry, timeout, bulkhead, rate limit, fallback, hedging,
fault injection — composable with :func:`pipeline`, for sync and async code alike.

Optional integrations live in submodules that import their library lazily:
:mod:`safeship.resilience.redis_shared` (breaker state shared across processes) and
:mod:`safeship.resilience.presets` (httpx transport, Redis cache, provider failover,
database transaction retry). Test helpers are in :mod:`safeship.resilience.testing`.
"""

from safeship.resilience.breaker import Breaker, Listener
from safeship.resilience.breaker_types import BreakerSnapshot, State, Transition
from safeship.resilience.budget import RetryBudget
from safeship.resilience.bulkhead import Bulkhead
from safeship.resilience.chaos import Chaos, ChaosError
from safeship.resilience.classify import is_permanent, retry_after_hint
from safeship.resilience.clock import SYSTEM_CLOCK, Clock
from safeship.resilience.errors import (
    BreakerOpen,
    BulkheadFull,
    DeadlineExceeded,
    RateLimited,
    Rejected,
)
from safeship.resilience.fallback import Fallback
from safeship.resilience.hedge import Hedge
from safeship.resilience.pipeline import Pipeline, pipeline
from safeship.resilience.ratelimit import AsyncRedisRateLimiter, RateLimiter, RedisRateLimiter
from safeship.resilience.registry import all_breakers, get_breaker
from safeship.resilience.retry import Retry, RetryEvent
from safeship.resilience.schedules import (
    Constant,
    DecorrelatedJitter,
    EqualJitter,
    Exponential,
    FullJitter,
    Linear,
)
from safeship.resilience.timeout import Timeout, current_deadline, deadline, remaining
from safeship.resilience.windows import ConsecutiveFailures, CountWindow, TimeWindow

__all__ = [
    "SYSTEM_CLOCK",
    "AsyncRedisRateLimiter",
    "Breaker",
    "BreakerOpen",
    "BreakerSnapshot",
    "Bulkhead",
    "BulkheadFull",
    "Chaos",
    "ChaosError",
    "Clock",
    "ConsecutiveFailures",
    "Constant",
    "CountWindow",
    "DeadlineExceeded",
    "DecorrelatedJitter",
    "EqualJitter",
    "Exponential",
    "Fallback",
    "FullJitter",
    "Hedge",
    "Linear",
    "Listener",
    "Pipeline",
    "RateLimited",
    "RateLimiter",
    "RedisRateLimiter",
    "Rejected",
    "Retry",
    "RetryBudget",
    "RetryEvent",
    "State",
    "TimeWindow",
    "Timeout",
    "Transition",
    "all_breakers",
    "current_deadline",
    "deadline",
    "get_breaker",
    "is_permanent",
    "pipeline",
    "remaining",
    "retry_after_hint",
]
