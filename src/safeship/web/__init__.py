"""Pure-ASGI middleware and helpers that harden and observe the user's own service.

``protect(app, ...)`` adds everything at once; each part is also usable alone. None of it
needs Starlette except `DebugAccess` (a FastAPI dependency), imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from safeship.web.auth import ApiKeyAuth
from safeship.web.clients import ClientAddresses, ClientAddressMiddleware, TrustedProxyError
from safeship.web.csrf import OriginCheckMiddleware
from safeship.web.endpoints import HealthEndpoints, MetricsEndpoint
from safeship.web.files import UnsafeFilenameError, safe_filename
from safeship.web.keys import generate_key, hash_key, verify_key
from safeship.web.limiter import (
    FailureStore,
    LimitPolicy,
    MemoryFailureStore,
    RedisFailureStore,
    Verdict,
)
from safeship.web.limits import BodyLimitError, BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web.pagination import Page, PageResult, page_params
from safeship.web.protect import protect
from safeship.web.request_id import RequestIdMiddleware
from safeship.web.telemetry import AccessLogMiddleware, MetricsMiddleware, ObserveMiddleware

if TYPE_CHECKING:
    from safeship.web.debug import DebugAccess, require_debug_access

__all__ = [
    "AccessLogMiddleware",
    "ApiKeyAuth",
    "BodyLimitError",
    "BodySizeLimitMiddleware",
    "ClientAddressMiddleware",
    "ClientAddresses",
    "DebugAccess",
    "FailureStore",
    "HealthEndpoints",
    "LimitPolicy",
    "MemoryFailureStore",
    "MetricsEndpoint",
    "MetricsMiddleware",
    "ObserveMiddleware",
    "OriginCheckMiddleware",
    "Page",
    "PageResult",
    "RedisFailureStore",
    "RequestIdMiddleware",
    "TimeoutMiddleware",
    "TrustedProxyError",
    "UnsafeFilenameError",
    "Verdict",
    "generate_key",
    "hash_key",
    "page_params",
    "protect",
    "require_debug_access",
    "safe_filename",
    "verify_key",
]

_LAZY = {"DebugAccess": "safeship.web.debug", "require_debug_access": "safeship.web.debug"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safeship.web' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
