"""The control plane's FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from safeship._version import __version__
from safeship.db._engine import create_engine
from safeship.db._migrate import current_revision
from safeship.flags.store import FlagStore
from safeship.observe.health import HealthRegistry, schema_check, sql_check
from safeship.observe.scrape import DatabaseCollector, ScrapeSource
from safeship.resilience.board import BreakerBoard
from safeship.rollouts._guard import RolloutGuard
from safeship.server._samples import plane_sampler, run_until_cancelled
from safeship.server.errors import install_error_handlers
from safeship.server.flag_feed import FlagFeed
from safeship.server.keys import KeyRing
from safeship.server.routes import (
    api,
    breakers,
    dashboard,
    database,
    flags_api,
    flags_pages,
    health,
    jobs,
    ofrep,
    outbox,
    overview,
    rollouts,
    unleash_api,
    unleash_stream,
)
from safeship.server.sdk_clients import SdkClientStore
from safeship.server.session import SessionSigner, SessionStore
from safeship.server.state import ControlPlane, NavItem
from safeship.server.unhandled import UnhandledErrorMiddleware
from safeship.settings import Settings, load_settings
from safeship.web._clients import ClientAddressMiddleware
from safeship.web._limiter import FailureStore, MemoryFailureStore, RedisFailureStore
from safeship.web._limits import BodySizeLimitMiddleware
from safeship.web._request_id import RequestIdMiddleware
from safeship.web._telemetry import ObserveMiddleware

logger = logging.getLogger("safeship.server")
_STATIC = Path(__file__).resolve().parent / "static"
#: The one route whose bodies may exceed ``max_body_bytes`` (up to ``import_max_body_bytes``).
IMPORT_PATH = "/api/v1/flags/import"


def build_plane(settings: Settings, engine: sa.Engine) -> ControlPlane:
    """Assemble the control plane's state; the readiness probe checks the database."""
    registry = HealthRegistry()
    registry.add(
        "database",
        sql_check(engine),
        timeout=2.0,
        cache_ttl=settings.health_cache_seconds,
        kinds=("readiness",),
    )
    # Not ready on a stale schema: say which revisions, before any request writes.
    registry.add(
        "schema",
        schema_check(engine),
        timeout=2.0,
        cache_ttl=settings.health_cache_seconds,
        kinds=("readiness",),
    )
    if settings.session_secret_was_generated:
        # The value is never logged: only which setting was generated and what follows.
        logger.warning(
            "settings.generated_secret",
            extra={
                "setting": "SAFESHIP_SESSION_SECRET",
                "environment": settings.environment,
                "consequence": "dashboard sessions end when this process restarts",
            },
        )
    secret = settings.session_secret
    if secret is None:  # load_settings always fills it; a hand-built Settings may not
        raise ValueError("SAFESHIP_SESSION_SECRET is required to sign dashboard sessions")
    flag_store = FlagStore(engine, publish=_flag_publisher(settings))
    keys = KeyRing(settings, engine)
    signer = SessionSigner(secret.get_secret_value(), max_age=settings.session_max_age_seconds)
    auth_failures = _failure_store(settings)
    if isinstance(auth_failures, RedisFailureStore):
        # Not critical: without Redis, failed sign-ins are counted in this process.
        registry.add(
            "auth_failure_store",
            auth_failures.health_check(),
            timeout=2.0,
            cache_ttl=settings.health_cache_seconds,
            kinds=("readiness",),
            critical=False,
            component_type="datastore",
        )
    return ControlPlane(
        settings=settings,
        engine=engine,
        keys=keys,
        sessions=SessionStore(engine, signer, keys),
        health=registry,
        flags=flag_store,
        auth_failures=auth_failures,
        breakers=BreakerBoard(engine),
        rollouts=RolloutGuard(engine, flag_store),
        nav=[
            NavItem("/", "Overview"),
            NavItem("/flags", "Flags"),
            NavItem("/breakers", "Breakers"),
            NavItem("/rollouts", "Rollouts"),
            NavItem("/outbox", "Outbox"),
            NavItem("/jobs", "Jobs"),
            NavItem("/database", "Database"),
        ],
    )


def stored_metrics(engine: sa.Engine, *, timeout: float = 2.0) -> DatabaseCollector:
    """What ``/metrics`` reads from the database at each scrape: the outbox, the flags,
    the rollouts and the breaker board (see docs/metrics.md)."""
    from safeship.flags import _metrics as flag_metrics
    from safeship.outbox import _metrics as outbox_metrics
    from safeship.resilience import _board_metrics as board_metrics
    from safeship.rollouts import _metrics as rollout_metrics

    sources = [
        ScrapeSource("outbox", outbox_metrics.read_stored),
        ScrapeSource("flags", flag_metrics.read_stored),
        ScrapeSource("rollouts", rollout_metrics.RolloutFigures().read),
        ScrapeSource("breakers", board_metrics.read_stored),
    ]
    return DatabaseCollector(engine, sources, timeout=timeout)


def _migrate_loudly(engine: sa.Engine) -> None:
    """``upgrade(engine)`` through ``safe_upgrade`` (lock timeouts retried, INVALID indexes
    reported), logging ``db.migrated`` (from/to revisions) when it did anything."""
    from safeship.data._migrate_runner import upgrade_safeship

    before = current_revision(engine)
    reached = upgrade_safeship(engine).value
    if reached != before:
        logger.warning(
            "db.migrated",
            extra={
                "database": engine.url.render_as_string(hide_password=True),
                "from_revision": before,
                "to_revision": reached,
                "by": "create_app(migrate=True)",
            },
        )


def _failure_store(settings: Settings) -> FailureStore:
    """Where failed sign-ins are counted: Redis when configured (shared by every replica)."""
    if settings.redis_url:
        return RedisFailureStore(settings.redis_url)
    return MemoryFailureStore()


def _flag_publisher(settings: Settings) -> Callable[[int], None] | None:
    """Announce flag changes on Redis when configured (PostgreSQL NOTIFY needs nothing)."""
    if not settings.redis_url:
        return None
    from safeship.flags.live import redis_publisher

    return redis_publisher(settings.redis_url)


def _headroom_at_start(engine: sa.Engine, settings: Settings) -> None:
    """Log (``data.pool.headroom``) when the fleet's pools may outgrow the server."""
    from safeship.data import startup_headroom

    startup_headroom(
        engine,
        processes=settings.db_expected_processes,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        reserve=settings.db_connection_reserve,
    )


def create_app(
    settings: Settings | None = None,
    *,
    engine: sa.Engine | None = None,
    migrate: bool = True,
    sample_interval: float | None = 30.0,
) -> FastAPI:
    """The control plane app; migrates the database first unless ``migrate=False``.

    Migrating is never silent: when it changed the schema it logs ``db.migrated`` (WARNING,
    with ``database``, ``from_revision`` and ``to_revision``). ``safeship serve`` passes
    ``migrate=False``: there a stale schema fails readiness ("run `safeship db upgrade`").

    While it runs it samples the charts' history every ``sample_interval`` seconds
    (``None``: no sampling; see docs/dashboard.md)."""
    settings = settings or load_settings()
    owns_engine = engine is None
    engine = engine or create_engine(settings=settings)
    if migrate:
        _migrate_loudly(engine)
    cp = build_plane(settings, engine)
    # What Unleash SDKs and OFREP providers are served from (no database read per request).
    feed = FlagFeed(cp.flags, redis_url=settings.redis_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sampling = None
        if sample_interval is not None:
            sampler = plane_sampler(cp, interval=sample_interval)
            sampling = asyncio.create_task(run_until_cancelled(sampler))
        await asyncio.to_thread(_headroom_at_start, engine, settings)
        yield
        if sampling is not None:
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
        if isinstance(cp.auth_failures, RedisFailureStore):
            await cp.auth_failures.aclose()  # its connections belong to this event loop
        feed.close()  # the SDK routes' snapshot refresher (started on first use)
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="safeship control plane",
        version=__version__,
        description="See and steer flags, rollouts, outbox and resilience of your services.",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.plane = cp
    app.state.scrape = stored_metrics(engine)
    app.state.flag_feed = feed
    app.state.sdk_clients = SdkClientStore(engine)
    install_error_handlers(app)
    app.include_router(health.router)
    # The SDK routes answer every SDK's polls: matched right after the probes, before the
    # operators' API and pages, so a poll does not walk every other route first.
    app.include_router(unleash_api.router)
    app.include_router(unleash_stream.router)
    app.include_router(ofrep.router)
    app.include_router(api.router)
    app.include_router(flags_api.router)
    app.include_router(dashboard.router)
    app.include_router(flags_pages.router)
    app.include_router(breakers.api)
    app.include_router(breakers.pages)
    app.include_router(rollouts.api)
    app.include_router(rollouts.pages)
    app.include_router(outbox.api)
    app.include_router(outbox.pages)
    app.include_router(jobs.api)
    app.include_router(jobs.pages)
    app.include_router(database.api)
    app.include_router(database.pages)
    app.include_router(overview.api)
    app.include_router(overview.pages)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    # Innermost pure ASGI layer: an unhandled exception is logged with the request id.
    app.add_middleware(UnhandledErrorMiddleware)
    _add_edge_layers(app, settings)
    return app


def _add_edge_layers(app: FastAPI, settings: Settings) -> None:
    """Pure ASGI layers, outermost first: request id, client address (proxy headers only
    from ``SAFESHIP_TRUSTED_PROXIES``), one access-log line and the HTTP metrics, then the
    body limit, so an oversized body is refused before routing, sign-in or any key check."""
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        path_limits={IMPORT_PATH: max(settings.import_max_body_bytes, settings.max_body_bytes)},
    )
    app.add_middleware(ObserveMiddleware, quiet_paths=("/health", "/health/ready", "/metrics"))
    app.add_middleware(
        ClientAddressMiddleware,
        trusted_proxies=settings.trusted_proxy_list(),
        header=settings.proxy_header,
    )
    app.add_middleware(RequestIdMiddleware)
