"""`protect`: the whole safeship middleware stack around an ASGI app in one call."""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Iterable, Mapping

from safeship.observe import metrics as observe_metrics
from safeship.observe.health import HealthRegistry
from safeship.observe.logging import (
    configure_logging,
    is_configured,
    note_request_id,
    request_id,
)
from safeship.web._asgi import ASGIApp, Message, Receive, Scope, Send
from safeship.web.auth import ApiKeyAuth
from safeship.web.clients import ClientAddresses, ProxyHeader
from safeship.web.csrf import OriginCheckMiddleware
from safeship.web.endpoints import DEFAULT_HEALTH_PATHS, HealthEndpoints, MetricsEndpoint
from safeship.web.express import ExpressLane
from safeship.web.limiter import FailureStore
from safeship.web.limits import BodySizeLimitMiddleware, TimeoutMiddleware
from safeship.web.request_id import RequestIdMiddleware, with_header
from safeship.web.telemetry import ObserveMiddleware, RouteLabel


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
    same-origin only). Every setting is validated here, at start-up.

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
    layers: list[object] = []  # the guards, innermost first
    if metrics_path is not None:
        wrapped = MetricsEndpoint(wrapped, path=metrics_path)
        layers.append(wrapped)
    if keys or digests:
        wrapped = ApiKeyAuth(
            wrapped,
            keys=keys,
            key_digests=digests,
            protected_prefixes=protected_prefixes,
            store=auth_store,
            trusted_proxies=proxies,
            proxy_header=proxy_header,
        )
        layers.append(wrapped)
    if allowed_origins is not None:
        wrapped = OriginCheckMiddleware(wrapped, allowed_origins=allowed_origins)
        layers.append(wrapped)
    if max_body_bytes is not None:
        wrapped = BodySizeLimitMiddleware(wrapped, max_body_bytes=max_body_bytes)
        layers.append(wrapped)
    if health is not None:
        wrapped = HealthEndpoints(wrapped, health, paths=health_paths)
        layers.append(wrapped)
    timeout = (
        None if request_timeout is None else TimeoutMiddleware(wrapped, timeout=request_timeout)
    )
    observe = None
    if access_log or metrics:
        quiet = (*health_paths.values(), *((metrics_path,) if metrics_path else ()))
        observe = ObserveMiddleware(
            wrapped,
            access_log=access_log,
            metrics=metrics,
            quiet_paths=quiet,
            route_label=route_label,
        )
    request_ids = RequestIdMiddleware(wrapped)
    return ProtectedApp(
        wrapped,
        request_ids,
        observe,
        timeout,
        addresses=addresses,
        lane=ExpressLane.build(app, layers, request_ids, addresses),
    )


class ProtectedApp:
    """The outer layers of `protect` run as one: request id, access log, metrics, timeout.

    Each behaves as its own middleware (`RequestIdMiddleware`, `ObserveMiddleware`,
    `TimeoutMiddleware`) stacked in that order would, with one wrapper around ``send``
    instead of three, which matters on every request. With a ``lane`` (an `ExpressLane`
    over the guards between these layers and the user's app), a request every guard
    would pass untouched goes to the app directly; any other goes through the guards,
    which answer it (probes, 401, 413...) as they do on their own. Either way the
    client address is settled first (`ClientAddresses.settle`): every layer, the access
    log and the app read the same one.
    """

    def __init__(
        self,
        app: ASGIApp,
        request_ids: RequestIdMiddleware,
        observe: ObserveMiddleware | None,
        timeout: TimeoutMiddleware | None,
        *,
        addresses: ClientAddresses | None = None,
        lane: ExpressLane | None = None,
    ) -> None:
        self.app = app
        self.addresses = addresses or ClientAddresses()
        self.request_ids = request_ids
        self._id_header = request_ids.header_key
        self.observe = observe
        self.timeout = timeout
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                self.addresses.settle(scope)
            await self.app(scope, receive, send)  # the three layers only act on HTTP
            return
        loop = _running_loop()
        if loop is None:
            task = None
        elif _current_tasks is not None:
            task = _current_tasks.get(loop)
        else:
            task = asyncio.current_task(loop)
        lane = self.lane
        incoming = None if lane is None else lane.look(scope)
        if incoming is None:
            target = self.app
            self.addresses.settle(scope)
            rid, encoded = self.request_ids.assign(scope)
        else:
            target = lane.app  # type: ignore[union-attr]  # a lane gave ``incoming``
            rid, encoded = self.request_ids.adopt(scope, incoming)
        token = request_id.set(rid)
        key = self._id_header
        status = 500
        started = False

        def send_wrapped(message: Message) -> Awaitable[None]:
            # A plain function returning the server's awaitable: no coroutine of its own.
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                message["headers"] = with_header(message.get("headers", ()), key, encoded)
            return send(message)

        observe, timeout = self.observe, self.timeout
        began = _perf_counter()
        begun = None if observe is None or not observe.metrics else observe_metrics.HTTP.started()
        # Without a task (not run by an asyncio server) there is nothing to cancel.
        watch = None if timeout is None or task is None else timeout.watch(task, loop)
        try:
            await target(scope, receive, send_wrapped)
        except asyncio.CancelledError:
            if task is None or timeout is None or watch is None:
                raise
            if not timeout.is_own_timeout(task, watch):
                raise
            await timeout.timed_out(scope, send_wrapped, started)
        except Exception as exc:
            note_request_id(exc, rid)  # the server logs it after the context is gone
            raise
        finally:
            try:
                if watch is not None:
                    watch[1].discard(task)
                    if watch[0].expired:  # rare: let the timeout sort it out
                        timeout.release(task, watch)  # type: ignore[union-attr, arg-type]
                if observe is not None:
                    observe.finish(scope, status, _perf_counter() - began, begun, loop)
            finally:
                request_id.reset(token)


_running_loop = asyncio._get_running_loop
_perf_counter = time.perf_counter
#: The running task of each loop, as `asyncio.current_task` reads it where that is a
#: Python function (Python 3.11): read directly, without the function's frame.
_current_tasks: dict[object, asyncio.Task[object]] | None = getattr(
    asyncio.tasks, "_current_tasks", None
)
if not isinstance(asyncio.current_task, types.FunctionType) or type(_current_tasks) is not dict:
    _current_tasks = None


def _root_has_handlers() -> bool:
    return bool(logging.getLogger().handlers)
