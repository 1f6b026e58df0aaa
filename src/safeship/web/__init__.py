"""Pure-ASGI middleware and helpers that harden and observe the user's own service.

``protect(app, ...)`` adds everything at once; each part is also usable alone. None of it
needs Starlette except `DebugAccess` (a FastAPI dependency), imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from safeship.web._auth import ApiKeyAuth
from safeship.web._clients import ClientAddresses, ClientAddressMiddleware, TrustedProxyError
from safeship.web._csrf import OriginCheckMiddleware
from safeship.web._endpoints import HealthEndpoints, MetricsEndpoint
from safeship.web._files import UnsafeFilenameError, safe_filename
from safeship.web._keys import generate_key, hash_key, verify_key
from safeship.web._limiter import (
    FailureStore,
    LimitPolicy,
    MemoryFailureStore,
    RedisFailureStore,
    Verdict,
)
from safeship.web._limits import BodyLimitError, BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web._pagination import Page, PageResult, page_params
from safeship.web._protect import protect
from safeship.web._request_id import RequestIdMiddleware
from safeship.web._telemetry import AccessLogMiddleware, MetricsMiddleware, ObserveMiddleware
from safeship.web._wsgi import ProtectedWSGI, protect_wsgi

if TYPE_CHECKING:
    from safeship.web._debug import DebugAccess, require_debug_access

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
    "ProtectedWSGI",
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
    "protect_wsgi",
    "require_debug_access",
    "safe_filename",
    "verify_key",
]

_LAZY = {"DebugAccess": "safeship.web._debug", "require_debug_access": "safeship.web._debug"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safeship.web' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
