"""`protect`: the whole safeship middleware stack around an ASGI app in one call."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from safeship.observe._logging import configure_logging, is_configured
from safeship.observe.health import HealthRegistry
from safeship.web._asgi import ASGIApp
from safeship.web._auth import ApiKeyAuth
from safeship.web._clients import ClientAddresses, ProxyHeader
from safeship.web._csrf import OriginCheckMiddleware
from safeship.web._endpoints import DEFAULT_HEALTH_PATHS, HealthEndpoints, MetricsEndpoint
from safeship.web._express import ExpressLane, Passes
from safeship.web._limiter import FailureStore
from safeship.web._limits import BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web._request_id import RequestIdMiddleware
from safeship.web._telemetry import ObserveMiddleware, RouteLabel

Guard = (
    MetricsEndpoint | ApiKeyAuth | OriginCheckMiddleware | BodySizeLimitMiddleware | HealthEndpoints
)


def protect(
    app: ASGIApp,
    *,
    health: HealthRegistry | None = None,
    health_paths: Mapping[str, str] = DEFAULT_HEALTH_PATHS,
    metrics_path: str | None = "/metrics",
    api_keys: Iterable[str] = (),
    api_key_digests: Iterable[str] = (),
    protected_prefixes: Iterable[str] = ("/admin", "/api"),
    auth_store: FailureStore | None = None,
    trusted_proxies: Iterable[str] = (),
    proxy_header: ProxyHeader = "x-forwarded-for",
    allowed_origins: Iterable[str] | None = None,
    max_body_bytes: int | None = 1_048_576,
    request_timeout: float | None = 30.0,
    access_log: bool = True,
    metrics: bool = True,
    route_label: RouteLabel | None = None,
    configure_logs: bool = True,
) -> ASGIApp:
    """Wrap ``app`` with request ids, access log, metrics, probes and the chosen guards.

    Layers, outermost first: request id → access log and metrics → timeout → health
    probes → body size limit → CSRF origin check → API-key auth → metrics endpoint → app.
    API-key auth is on when keys are given (``/metrics`` is then protected when it lies
    under a protected prefix); CSRF is on when ``allowed_origins`` is given (``[]`` means
    same-origin only). Every setting is validated here, at start-up. A request every
    guard passes (each asked through its own ``passes``) skips their layers: see
    `ExpressLane`.

    The client address (brute-force counts, access log, ``request.client``) is the socket
    peer unless the peer is one of ``trusted_proxies`` (IPs or CIDR ranges, none by
    default): then the right-most address of ``proxy_header`` that is not a trusted proxy.
    """
    keys = tuple(api_keys)
    proxies = tuple(trusted_proxies)
    addresses = ClientAddresses(proxies, header=proxy_header)
    digests = tuple(api_key_digests)
    if configure_logs and not is_configured() and not _root_has_handlers():
        configure_logging()
    wrapped: ASGIApp = app
    checks: list[Passes] = []  # each guard's own decision, innermost first
    guard: Guard
    if metrics_path is not None:
        guard = MetricsEndpoint(wrapped, path=metrics_path)
        wrapped = guard
        checks.append(guard.passes)
    if keys or digests:
        guard = ApiKeyAuth(
            wrapped,
            keys=keys,
            key_digests=digests,
            protected_prefixes=protected_prefixes,
            store=auth_store,
            trusted_proxies=proxies,
            proxy_header=proxy_header,
        )
        wrapped = guard
        checks.append(guard.passes)
    if allowed_origins is not None:
        guard = OriginCheckMiddleware(wrapped, allowed_origins=allowed_origins)
        wrapped = guard
        checks.append(guard.passes)
    if max_body_bytes is not None:
        guard = BodySizeLimitMiddleware(wrapped, max_body_bytes=max_body_bytes)
        wrapped = guard
        checks.append(guard.passes)
    if health is not None:
        guard = HealthEndpoints(wrapped, health, paths=health_paths)
        wrapped = guard
        checks.append(guard.passes)
    # Asked in the order the layers would decide: outermost first.
    outer: ASGIApp = ExpressLane(wrapped, app, reversed(checks), addresses)
    if request_timeout is not None:
        outer = TimeoutMiddleware(outer, timeout=request_timeout)
    if access_log or metrics:
        quiet = (*health_paths.values(), *((metrics_path,) if metrics_path else ()))
        outer = ObserveMiddleware(
            outer,
            access_log=access_log,
            metrics=metrics,
            quiet_paths=quiet,
            route_label=route_label,
        )
    return RequestIdMiddleware(outer)


def _root_has_handlers() -> bool:
    return bool(logging.getLogger().handlers)
