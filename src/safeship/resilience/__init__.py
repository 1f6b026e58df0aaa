"""Resilience policies — breaker, retry, timeout, bulkhead, rate limit, fallback, hedging,
fault injection — composable with :func:`pipeline`, for sync and async code alike.

Optional integrations live in submodules that import their library lazily:
:mod:`safeship.resilience.redis_shared` (breaker state shared across processes) and
:mod:`safeship.resilience.presets` (httpx transport, Redis cache, provider failover,
database transaction retry). Test helpers are in :mod:`safeship.resilience.testing`.
"""

from safeship.resilience._breaker import Breaker, Listener
from safeship.resilience._breaker_types import BreakerSnapshot, State, Transition
from safeship.resilience._budget import RetryBudget
from safeship.resilience._bulkhead import Bulkhead
from safeship.resilience._chaos import Chaos, ChaosError
from safeship.resilience._classify import is_permanent, retry_after_hint
from safeship.resilience._clock import SYSTEM_CLOCK, Clock
from safeship.resilience._default_registry import (
    BreakerRegistry,
    all_breakers,
    default_registry,
    get_breaker,
)
from safeship.resilience._errors import (
    BreakerOpen,
    BulkheadFull,
    DeadlineExceeded,
    RateLimited,
    Rejected,
)
from safeship.resilience._fallback import Fallback
from safeship.resilience._hedge import Hedge
from safeship.resilience._metrics import BreakerCollector
from safeship.resilience._pipeline import Pipeline, pipeline
from safeship.resilience._ratelimit import AsyncRedisRateLimiter, RateLimiter, RedisRateLimiter
from safeship.resilience._retry import Retry, RetryEvent
from safeship.resilience._schedules import (
    Constant,
    DecorrelatedJitter,
    EqualJitter,
    Exponential,
    FullJitter,
    Linear,
)
from safeship.resilience._timeout import Timeout, current_deadline, deadline, remaining
from safeship.resilience._windows import ConsecutiveFailures, CountWindow, TimeWindow

__all__ = [
    "SYSTEM_CLOCK",
    "AsyncRedisRateLimiter",
    "Breaker",
    "BreakerCollector",
    "BreakerOpen",
    "BreakerRegistry",
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
    "default_registry",
    "get_breaker",
    "is_permanent",
    "pipeline",
    "remaining",
    "retry_after_hint",
]
