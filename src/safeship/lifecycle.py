"""Graceful shutdown for an ASGI service (uvicorn, ``safeship serve``).

On SIGTERM or SIGINT: readiness turns 503 at once while the listener keeps accepting for
``drain_delay`` seconds (load balancers keep routing for a moment after the signal), then
the server is asked to stop: it closes the listener and lets in-flight requests finish
for up to ``shutdown_timeout`` seconds. Background tasks are told to stop after their
current unit, close hooks run in reverse order of registration, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

from safeship.observe._logging import get_logger
from safeship.observe.health import HealthRegistry

CloseHook = Callable[[], Any] | Callable[[], Awaitable[Any]]
BackgroundFn = Callable[[asyncio.Event], Awaitable[Any]]
SignalHandler = Callable[[int, FrameType | None], Any] | int | None

_log = get_logger("safeship.lifecycle")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """Start-up and graceful shutdown of one service process.

    Use ``FastAPI(lifespan=lifecycle.lifespan)`` / ``Starlette(lifespan=...)``, or wrap any
    ASGI app with `wrap` (which also counts in-flight requests and answers with
    ``Connection: close`` while draining). Keep ``drain_delay + shutdown_timeout`` below the
    platform's kill deadline (Kubernetes ``terminationGracePeriodSeconds``, default 30 s).
    """

    def __init__(
        self,
        *,
        health: HealthRegistry | None = None,
        drain_delay: float = 5.0,
        shutdown_timeout: float = 20.0,
        handle_signals: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("drain_delay", drain_delay), ("shutdown_timeout", shutdown_timeout)):
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"Lifecycle.{name} must be a finite number >= 0, got {value!r}")
        self.health = health
        self.drain_delay = float(drain_delay)
        self.shutdown_timeout = float(shutdown_timeout)
        self.handle_signals = handle_signals
        self._clock = clock
        self._close_hooks: list[tuple[str, CloseHook]] = []
        self._background: list[tuple[str, BackgroundFn]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._draining = False
        self._previous: dict[int, SignalHandler] = {}
        self._in_flight = 0
        self._drain_task: asyncio.Task[None] | None = None

    # -- registration -------------------------------------------------------------------

    def add_close_hook(self, fn: CloseHook, *, name: str | None = None) -> CloseHook:
        """Run ``fn`` (sync or async) at shutdown; hooks run in reverse order of adding."""
        self._close_hooks.append((name or _name_of(fn), fn))
        return fn

    def add_background(self, fn: BackgroundFn, *, name: str | None = None) -> BackgroundFn:
        """Run ``fn(stop_event)`` from start-up; it should return soon after the event is set."""
        self._background.append((name or _name_of(fn), fn))
        return fn

    # -- state --------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """True from the shutdown signal on."""
        return self._draining

    @property
    def in_flight(self) -> int:
        """HTTP requests currently running through `wrap`."""
        return self._in_flight

    @property
    def stop_event(self) -> asyncio.Event:
        """Set when background work must stop."""
        return self._stop

    # -- start-up and shutdown ----------------------------------------------------------

    async def startup(self) -> None:
        """Install signal handlers and start background tasks."""
        self._stop = asyncio.Event()
        if self.handle_signals:
            self._install_signal_handlers()
        for name, fn in self._background:
            self._tasks.append(asyncio.create_task(_guarded(name, fn, self._stop), name=name))
        _log.info("lifecycle.started", background=len(self._tasks))

    def begin_drain(self, reason: str = "shutting down") -> None:
        """Turn readiness to 503 now (idempotent). Called by the signal handler."""
        if self._draining:
            return
        self._draining = True
        if self.health is not None:
            self.health.mark_not_ready(reason)
        _log.info("lifecycle.draining", reason=reason, drain_delay=self.drain_delay)

    async def shutdown(self) -> None:
        """Stop background tasks, then run close hooks in reverse order, within the deadline."""
        self.begin_drain()
        deadline = self._clock() + self.shutdown_timeout
        self._stop.set()
        await self._stop_background(deadline)
        for name, hook in reversed(self._close_hooks):
            await self._run_hook(name, hook, deadline)
        self._restore_signal_handlers()
        _log.info("lifecycle.stopped")

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """A Starlette/FastAPI ``lifespan``: start-up on enter, graceful shutdown on exit."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # -- signals ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._make_handler(loop))
            except ValueError:  # not the main thread: the server owns signals
                self._previous.clear()
                return

    def _restore_signal_handlers(self) -> None:
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _make_handler(self, loop: asyncio.AbstractEventLoop) -> Callable[[int, Any], None]:
        def on_signal(sig: int, _frame: Any) -> None:
            if self._draining:  # a second signal: stop now
                loop.call_soon_threadsafe(self._forward, sig)
                return
            self.begin_drain(f"received {signal.Signals(sig).name}")
            loop.call_soon_threadsafe(self._schedule_forward, sig)

        return on_signal

    def _schedule_forward(self, sig: int) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._forward_later(sig))

    async def _forward_later(self, sig: int) -> None:
        await asyncio.sleep(self.drain_delay)
        self._forward(sig)

    def _forward(self, sig: int) -> None:
        """Ask the server to stop, as it would have on the signal itself."""
        previous = self._previous.get(sig)
        server = getattr(previous, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            _bound_uvicorn_deadline(server, self.shutdown_timeout)
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True  # a clean stop, so the process exits 0
        elif callable(previous):
            previous(sig, None)
        else:
            self._restore_signal_handlers()
            signal.raise_signal(sig)

    # -- helpers ------------------------------------------------------------------------

    async def _stop_background(self, deadline: float) -> None:
        if not self._tasks:
            return
        remaining = max(0.0, deadline - self._clock())
        _done, pending = await asyncio.wait(self._tasks, timeout=remaining)
        for task in pending:
            _log.warning("lifecycle.background_cancelled", task=task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()

    async def _run_hook(self, name: str, hook: CloseHook, deadline: float) -> None:
        remaining = max(0.01, deadline - self._clock())
        try:
            async with asyncio.timeout(remaining):
                result = hook()
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            _log.error("lifecycle.close_hook_timeout", hook=name)
        except Exception:  # noqa: BLE001 - one failing hook must not skip the others
            _log.exception("lifecycle.close_hook_failed", hook=name)

    def wrap(self, app: Any) -> Any:
        """Wrap an ASGI app: run the lifecycle on ``lifespan`` events (forwarding them to
        the app when it supports them) and track in-flight HTTP requests."""
        return LifecycleMiddleware(app, self)

    def _request_started(self) -> None:
        self._in_flight += 1

    def _request_finished(self) -> None:
        self._in_flight -= 1


def _bound_uvicorn_deadline(server: Any, seconds: float) -> None:
    """uvicorn waits for in-flight requests forever unless told otherwise; bound it."""
    config = getattr(server, "config", None)
    if config is not None and getattr(config, "timeout_graceful_shutdown", 0) is None:
        config.timeout_graceful_shutdown = seconds


async def _guarded(name: str, fn: BackgroundFn, stop: asyncio.Event) -> None:
    try:
        await fn(stop)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a failed background task is logged, not fatal
        _log.exception("lifecycle.background_failed", task=name)


def _name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class _InnerLifespan:
    """Drives the wrapped app's own lifespan protocol, if it has one."""

    def __init__(self, app: Any, scope: Any) -> None:
        self.app = app
        self.scope = scope
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.supported = True

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self._to_app.get, self._from_app.put)
        except Exception:  # noqa: BLE001 - an app without lifespan support raises here
            self.supported = False
        finally:
            await self._from_app.put(None)

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._from_app.get()
        if reply is None:
            self.supported = False
        elif reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(reply.get("message") or "application start-up failed")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        reply = await self._from_app.get()
        await asyncio.wait({self._task}, timeout=1.0)
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(reply.get("message") or "application shutdown failed")


class LifecycleMiddleware:
    """ASGI wrapper made by `Lifecycle.wrap`."""

    def __init__(self, app: Any, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle

        async def send_draining(message: Any) -> None:
            if message["type"] == "http.response.start" and lifecycle.draining:
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        lifecycle._request_started()
        try:
            await self.app(scope, receive, send_draining)
        finally:
            lifecycle._request_finished()

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        inner = _InnerLifespan(self.app, scope)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await inner.startup()
                    await self.lifecycle.startup()
                except Exception as exc:  # noqa: BLE001 - reported as startup.failed
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown(inner, send)
                return

    async def _shutdown(self, inner: _InnerLifespan, send: Any) -> None:
        await self.lifecycle.shutdown()
        try:
            await inner.shutdown()
        except Exception as exc:  # noqa: BLE001 - reported as shutdown.failed
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})
