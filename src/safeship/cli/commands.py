"""Core commands: serve the control plane, run the demo, check, migrate, manage keys."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from safeship._version import __version__
from safeship.cli._common import (
    DatabaseOption,
    actor,
    fail,
    help_width,
    open_engine,
    opened,
    or_fail,
    out,
    refuse_missing_sqlite,
    say_using,
    settings_or_exit,
    typer_app,
)
from safeship.observe._logging import configure_logging

if TYPE_CHECKING:
    import sqlalchemy as sa

    from safeship.settings import Settings

app = typer_app(
    name="safeship",
    help="Change a live Python service without risk.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=help_width(),
)
db_app = typer_app(help="Database migrations of safeship's own tables.")
keys_app = typer_app(help="Control-plane API keys.")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _version(value: bool) -> None:
    if value:
        out.print(f"safeship {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """safeship: flags, guarded rollouts, outbox, resilience and a control plane."""


def _log_database(shown: str) -> None:
    logging.getLogger("safeship.server").info("server.database", extra={"database": shown})


SERVE_SHUTDOWN_SECONDS = 10
"""How long ``safeship serve`` lets in-flight requests finish once its listener closed."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8700).")] = None,
    database_url: DatabaseOption = None,
    drain_delay: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=60,
            help="Seconds readiness answers 503 after SIGTERM before the listener closes "
            "(default 5 in production, 0 in development).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the control plane (API, dashboard, probes, metrics).

    On SIGTERM readiness fails at once, the listener keeps serving for --drain-delay
    seconds, then closes and in-flight requests get up to 10 s to finish.
    """
    import uvicorn

    from safeship.lifecycle import Lifecycle
    from safeship.server import create_app

    settings = settings_or_exit(host=host, port=port, database_url=database_url)
    # Every line of the process through one masked pipeline: warnings and uncaught
    # exceptions too, and JSON in production even on a terminal.
    fmt = (
        "json" if settings.is_production and settings.log_format == "auto" else settings.log_format
    )
    configure_logging(level=settings.log_level, fmt=fmt, capture_process=True)
    # Says which database (as a log line: the process logs JSON in production) and
    # refuses a missing or stale one: `safeship db upgrade` migrates, serve never does.
    engine = open_engine(settings.database_url, announce=_log_database)
    try:
        stored_keys = or_fail(lambda: _active_key_count(engine))
    finally:
        engine.dispose()
    application = or_fail(lambda: create_app(settings, migrate=False))
    _announce(settings.host, settings.port, settings, stored_keys)
    delay = drain_delay if drain_delay is not None else (5.0 if settings.is_production else 0.0)
    lifecycle = Lifecycle(
        health=application.state.plane.health,
        drain_delay=delay,
        shutdown_timeout=SERVE_SHUTDOWN_SECONDS,
    )
    uvicorn.run(
        lifecycle.wrap(application),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # None: keep the logging configured above (uvicorn's default config would give
        # its own loggers plain-text handlers again).
        log_config=None,
        timeout_graceful_shutdown=SERVE_SHUTDOWN_SECONDS,
        # The app reads proxy headers itself, only from SAFESHIP_TRUSTED_PROXIES:
        # uvicorn's own rewrite (on by default for 127.0.0.1) would let anyone on the
        # host choose their client address.
        proxy_headers=False,
    )


def _active_key_count(engine: sa.Engine) -> int:
    from safeship.server.keys import list_keys

    with engine.connect() as conn:
        return sum(1 for key in list_keys(conn) if not key["revoked"])


def _announce(host: str, port: int, settings: Settings, stored_keys: int) -> None:
    """Log where the control plane answers and, in development, how to sign in."""
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    server_log = logging.getLogger("safeship.server")
    server_log.info(
        "server.url",
        extra={"url": url, "login": url + "login", "api_docs": url + "api/docs"},
    )
    if settings.is_production:
        return
    if settings.admin_keys is None and stored_keys == 0:
        hint = (
            "no API key yet: run `safeship keys create ops --scope admin`, "
            f"then sign in at {url}login with the key it prints"
        )
    else:
        hint = (
            f"sign in at {url}login with an admin key "
            "(SAFESHIP_ADMIN_KEYS, or one from `safeship keys create NAME --scope admin`)"
        )
    server_log.info("server.sign_in", extra={"hint": hint, "stored_keys": stored_keys})


@app.command()
def check(database_url: DatabaseOption = None) -> None:
    """Validate settings and connectivity (database, Redis, broker); non-zero exit on failure."""
    from safeship.checks import run_checks

    settings = settings_or_exit(database_url=database_url)
    say_using(settings.database_url)
    refuse_missing_sqlite(settings.database_url, create=False)
    outcomes = run_checks(settings)
    table = Table(title="safeship check", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for o in outcomes:
        table.add_row(o.name, f"[{colours[o.status]}]{o.status}[/]", o.detail)
    out.print(table)
    if any(o.status == "fail" for o in outcomes):
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[
        int, typer.Option(help="Control-plane port; the orders service uses +1.")
    ] = 8700,
    no_traffic: Annotated[
        bool, typer.Option("--no-traffic", help="Do not generate traffic.")
    ] = False,
    database_url: Annotated[
        str, typer.Option("--database-url", help="Where the demo keeps its data.")
    ] = "sqlite:///./safeship-demo.db",
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="Relay order events to this NATS JetStream URL "
            "(nats://127.0.0.1:4222) instead of an in-process consumer.",
        ),
    ] = None,
    break_candidate: Annotated[
        bool,
        typer.Option(
            "--break-candidate",
            help="30 s after start, inject a fault into the "
            "rollout's candidate and let the guard roll it back.",
        ),
    ] = False,
    break_jobs: Annotated[
        bool,
        typer.Option(
            "--break-jobs",
            help="Make order confirmation jobs fail: they retry, then land in dead "
            "letters (Jobs page); turn the demo.break-jobs flag off to heal.",
        ),
    ] = False,
) -> None:
    """Run the reference orders service, the control plane and a traffic generator."""
    from safeship.demo.run import run_demo

    settings = settings_or_exit(database_url=database_url, port=port)
    say_using(settings.database_url, " (the demo creates and migrates it)")
    # Access logs at ~20 requests/s would bury the banner: show warnings and alerts only.
    configure_logging(level="WARNING", fmt=settings.log_format)
    delay = 30.0 if break_candidate else None
    or_fail(
        lambda: run_demo(
            settings,
            traffic=not no_traffic,
            out=out,
            break_candidate=delay,
            broker_url=broker,
            break_jobs=break_jobs,
        )
    )


@db_app.command("upgrade")
def db_upgrade(
    create: Annotated[
        bool, typer.Option("--create", help="Create the SQLite file if it does not exist.")
    ] = False,
    database_url: DatabaseOption = None,
    lock_timeout_ms: Annotated[
        int,
        typer.Option(
            "--lock-timeout-ms",
            min=1,
            max=600_000,
            help="PostgreSQL: how long a migration waits for a table lock before it rolls "
            "back and is retried with backoff (waiting for another upgrader has no limit).",
        ),
    ] = 2000,
    attempts: Annotated[
        int, typer.Option("--attempts", min=1, max=50, help="Runs before a lock timeout fails.")
    ] = 5,
    drop_invalid: Annotated[
        bool,
        typer.Option(
            "--drop-invalid", help="Drop INVALID indexes the run left behind (else: reported)."
        ),
    ] = False,
) -> None:
    """Migrate safeship's tables to the newest revision (the only command that does)."""
    from safeship.data import MigrationFailedError
    from safeship.data._migrate_runner import upgrade_safeship
    from safeship.db import current_revision

    with opened(database_url, check_schema=False, create=create) as engine:
        before = or_fail(lambda: current_revision(engine))
        try:
            result = or_fail(
                lambda: upgrade_safeship(
                    engine,
                    lock_timeout_ms=lock_timeout_ms,
                    attempts=attempts,
                    drop_invalid=drop_invalid,
                )
            )
        except MigrationFailedError as exc:
            left = f"; INVALID indexes left: {', '.join(exc.invalid_indexes)}"
            fail(f"{exc}{left if exc.invalid_indexes else ''}")
    reached = result.value
    moved = f" (was {before})" if before and before != reached else ""
    retried = f" after {result.attempts} attempts (lock timeouts)" if result.attempts > 1 else ""
    out.print(f"database at revision {reached}{moved}{retried}")
    for index in result.invalid_indexes:
        done = "dropped" if index in result.dropped else "left (drop it, or --drop-invalid)"
        out.print(f"INVALID index {index}: {done}", highlight=False)


@db_app.command("current")
def db_current(database_url: DatabaseOption = None) -> None:
    """Print the database's revision and the newest one this release ships."""
    from safeship.db import current_revision, head_revision

    with opened(database_url, check_schema=False) as engine:
        current = or_fail(lambda: current_revision(engine))
    out.print(f"current: {current or 'none (run safeship db upgrade)'}\nnewest:  {head_revision()}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. ops-alice.")],
    scope: Annotated[str, typer.Option(help="read, admin or frontend.")] = "read",
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key; it is printed once and stored only as a digest."""
    from safeship.server.keys import create_key

    if scope not in ("read", "admin", "frontend"):
        fail(f"--scope must be read, admin or frontend, got {scope!r}")
    with opened(database_url) as engine:

        def run() -> str:
            with engine.begin() as conn:
                return create_key(
                    conn,
                    name=name,
                    scope=scope,  # type: ignore[arg-type]  # checked above
                    actor=actor(),
                    reason=reason,
                )

        key = or_fail(run)
    out.print(f"{name} ({scope}): {key}\nStore it now: it is not shown again.", highlight=False)


@keys_app.command("list")
def keys_list(database_url: DatabaseOption = None) -> None:
    """List stored keys (names and scopes; never secrets)."""
    from safeship.server.keys import list_keys

    with opened(database_url) as engine:

        def run() -> list[dict[str, object]]:
            with engine.connect() as conn:
                return list_keys(conn)

        keys = or_fail(run)
    for key in keys:
        state = "revoked" if key["revoked"] else "active"
        out.print(f"{key['name']}\t{key['scope']}\t{state}\t{key['created_at']}")


@keys_app.command("revoke")
def keys_revoke(
    name: str,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a key (stored, or from SAFESHIP_ADMIN_KEYS); its sessions end at once."""
    from safeship.server.keys import KeyRing, revoke_key

    settings = settings_or_exit(database_url=database_url)
    settings_key = KeyRing(settings, None).settings_key(name)
    with opened(database_url) as engine:

        def run() -> bool:
            with engine.begin() as conn:
                return revoke_key(
                    conn, name=name, actor=actor(), reason=reason, settings_key=settings_key
                )

        revoked = or_fail(run)
    if not revoked:
        fail(f"no active key named {name!r}", code=1)
    out.print(f"revoked {name}")
