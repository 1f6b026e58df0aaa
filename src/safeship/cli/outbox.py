"""``safeship outbox ...``: backlog stats, peek at events, retry and purge dead letters,
and run a relay (``safeship outbox relay``, broker from ``SAFESHIP_BROKER_URL`` or ``--url``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.table import Table

from safeship.cli._common import (
    DatabaseOption,
    actor,
    confirm_or_fail,
    fail,
    open_engine,
    opened,
    or_fail,
    out,
    settings_or_exit,
    typer_app,
)
from safeship.db import record_audit
from safeship.outbox import Sink, admin

outbox_app = typer_app(help="The transactional outbox and its dead letters.")

IdsArg = Annotated[list[str] | None, typer.Argument(help="Event ids (UUIDs).", show_default=False)]
TypeOpt = Annotated[str | None, typer.Option("--aggregate-type", help="Only this aggregate type.")]
KeyOpt = Annotated[str | None, typer.Option("--aggregate-id", help="Only this aggregate id.")]
EventTypeOpt = Annotated[str | None, typer.Option("--type", help="Only this event type.")]


def _engine(database_url: str | None) -> sa.Engine:
    return open_engine(database_url)


_opened = opened


def _filter(
    ids: list[str] | None, agg_type: str | None, agg_id: str | None, type_: str | None
) -> admin.Filter:
    parsed = or_fail(lambda: admin.ids_from_strings(ids or []))
    return admin.Filter(ids=parsed, aggregate_type=agg_type, aggregate_id=agg_id, type=type_)


@outbox_app.command("stats")
def stats_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Pending, retrying and in-flight events, dead letters, the oldest event's age, live
    relays and how many events they deliver per second."""
    with _opened(database_url) as engine:
        reading = or_fail(lambda: admin.stats(engine))
    if as_json:
        out.print_json(json.dumps(reading.to_dict()))
        return
    table = Table("stat", "value")
    for name, value in reading.to_dict().items():
        table.add_row(name, f"{value:.1f}" if isinstance(value, float) else str(value))
    out.print(table)


@outbox_app.command("peek")
def peek_command(
    dead: Annotated[bool, typer.Option("--dead", help="Dead letters instead of pending.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    aggregate_type: TypeOpt = None,
    aggregate_id: KeyOpt = None,
    type_: EventTypeOpt = None,
    database_url: DatabaseOption = None,
) -> None:
    """The oldest pending events (or dead letters) with attempts and last error."""
    match = _filter(None, aggregate_type, aggregate_id, type_)
    where: admin.Where = "dead" if dead else "pending"
    with _opened(database_url) as engine:
        rows = or_fail(lambda: admin.peek(engine, where=where, match=match, limit=limit))
    table = Table()
    for column in ("id", "event", "key", "attempts", "created", "last error"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.id),
            f"{r.aggregate_type}.{r.type}",
            r.aggregate_id,
            str(r.attempts),
            r.created_at.isoformat()[:19],
            (r.last_error or "")[:80],
        )
    out.print(table)


@outbox_app.command("retry")
def retry_command(
    ids: IdsArg = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    aggregate_type: TypeOpt = None,
    aggregate_id: KeyOpt = None,
    type_: EventTypeOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Move dead letters back to the outbox: by id, by filter, or --all."""
    match = _filter(ids, aggregate_type, aggregate_id, type_)
    if match.empty and not all_:
        fail("give event ids, a filter (--aggregate-type/--aggregate-id/--type) or --all")
    engine = _engine(database_url)

    def run() -> int:
        with engine.begin() as conn:
            count = admin.retry(conn, match=match, everything=all_)
            record_audit(
                conn,
                actor=actor(),
                action="outbox.retry",
                target="outbox:dead",
                after={"count": count},
                reason=reason,
            )
        return count

    out.print(f"{or_fail(run)} dead letters moved back to the outbox")


@outbox_app.command("purge")
def purge_command(
    ids: IdsArg = None,
    aggregate_type: TypeOpt = None,
    aggregate_id: KeyOpt = None,
    type_: EventTypeOpt = None,
    yes: Annotated[
        int | None, typer.Option("--yes", help="Confirm this count without asking.")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Delete dead letters for good, after confirming how many."""
    match = _filter(ids, aggregate_type, aggregate_id, type_)
    engine = _engine(database_url)
    found = or_fail(lambda: admin.count(engine, where="dead", match=match))
    expected = yes
    if expected is None:
        confirm_or_fail(
            f"Delete {found} dead letters for good?", yes=False, option=f"--yes {found}"
        )
        expected = found

    def run() -> int:
        with engine.begin() as conn:
            count = admin.purge(conn, match=match, expected=expected)
            record_audit(
                conn,
                actor=actor(),
                action="outbox.purge",
                target="outbox:dead",
                before={"count": count},
            )
        return count

    try:
        out.print(f"{run()} dead letters deleted")
    except admin.PurgeMismatchError as exc:
        fail(str(exc))


#: URL schemes and the broker each names (``SAFESHIP_BROKER_URL``'s scheme picks the sink).
SCHEMES = {
    "nats": "nats",
    "tls": "nats",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "kafka": "kafka",
    "http": "webhook",
    "https": "webhook",
}
BROKERS = ("nats", "rabbitmq", "redis", "kafka", "webhook")


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def broker_of(url: str, broker: str | None) -> str:
    """The broker ``--broker`` names, else the one the URL's scheme names."""
    if broker is not None:
        if broker not in BROKERS:
            fail(f"--broker must be {', '.join(BROKERS)}, got {broker!r}")
        return broker
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        fail(
            f"cannot tell the broker from {url!r}: the URL's scheme names it "
            f"({', '.join(f'{k}://' for k in SCHEMES)}), or pass --broker"
        )
    return SCHEMES[scheme]


def _sink(
    broker: str,
    url: str,
    route: str | None,
    *,
    subject_prefix: str = "events.",
    stream: str | None = None,
    stream_setup: str = "off",
    secret_file: Path | None = None,
) -> Sink:
    if broker == "nats":
        from safeship.outbox.sinks.nats import DefaultSubject, NatsSink

        if not subject_prefix.endswith(".") or subject_prefix.strip(".") == "":
            fail(
                "--subject-prefix must be tokens ending in '.', e.g. 'events.', "
                f"got {subject_prefix!r}"
            )
        return or_fail(
            lambda: NatsSink(
                url,
                subject=route if route is not None else DefaultSubject(subject_prefix),
                stream=stream,
                stream_setup=stream_setup,  # type: ignore[arg-type]  # one of the three
            )
        )
    if broker == "rabbitmq":
        from safeship.outbox.sinks.rabbitmq import RabbitMQSink

        return RabbitMQSink(url, routing_key=route or "{aggregate_type}.{type}")
    if broker == "redis":
        from safeship.outbox.sinks.redis_streams import RedisStreamSink

        return RedisStreamSink(url, stream=route or "events:{aggregate_type}")
    if broker == "kafka":
        from safeship.outbox.sinks.kafka import KafkaSink

        servers = url.split("://", 1)[-1].split("/", 1)[0]
        return KafkaSink(servers, topic=route or "{aggregate_type}")
    if broker == "webhook":
        from safeship.outbox.sinks.webhook import WebhookSink

        if secret_file is None:
            fail("a webhook relay signs each request: pass --secret-file (16+ bytes)")
        secret = or_fail(lambda: secret_file.read_bytes().strip())
        return or_fail(lambda: WebhookSink(url, secret=secret))
    return fail(f"--broker must be {', '.join(BROKERS)}, got {broker!r}")


def _health(relay: Any, engine: sa.Engine) -> Callable[[], tuple[bool, str]]:
    """``/health`` of a relay process: the relay is running and its outbox check passes."""
    import asyncio

    from safeship.observe import HealthRegistry
    from safeship.observe.health import CheckResult
    from safeship.outbox.health import outbox_check

    registry = HealthRegistry(service_id="safeship-outbox-relay")

    def relay_running() -> CheckResult:
        if relay.sink_open:
            return CheckResult(status="pass", output=f"{relay.published} events published")
        return CheckResult(status="fail", output="the broker is not connected")

    registry.add("relay", relay_running)
    registry.add("outbox", outbox_check(engine), critical=False)

    def health() -> tuple[bool, str]:
        report = asyncio.run(registry.run("readiness"))
        return report.status != "fail", json.dumps(report.to_dict())

    return health


@outbox_app.command("relay")
def relay_command(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The broker URL; its scheme names the broker (nats://, amqp://, redis://, "
            "kafka://, http(s):// for a webhook). Default: SAFESHIP_BROKER_URL.",
            show_default=False,
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="nats, rabbitmq, redis, kafka or webhook, when the scheme is not enough."
        ),
    ] = None,
    route: Annotated[str | None, typer.Option(help="Subject/routing key/stream template.")] = None,
    subject_prefix: Annotated[
        str,
        typer.Option(
            help="NATS, without --route: subjects are <prefix><type> when the type names its "
            "aggregate (order.created), else <prefix><aggregate_type>.<type>."
        ),
    ] = "events.",
    stream: Annotated[
        str | None,
        typer.Option(
            help="NATS: the JetStream stream to use, created when missing (default in "
            "development: EVENTS, capturing the subject prefix, e.g. events.>).",
            show_default=False,
        ),
    ] = None,
    no_stream: Annotated[
        bool,
        typer.Option(
            "--no-stream",
            help="NATS: neither create nor check a stream (production default: check).",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve /metrics and /health on this port (0 picks a free one).",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Webhook: file holding the signing secret.", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 500,
    backlog_every: Annotated[
        float, typer.Option(help="Seconds between outbox.relay.backlog log lines.", min=1)
    ] = 60.0,
    database_url: DatabaseOption = None,
) -> None:
    """Run a relay in the foreground until Ctrl-C or SIGTERM.

    The broker comes from --url or SAFESHIP_BROKER_URL, its scheme naming the broker.
    For NATS the relay creates the JetStream stream it needs in development (--stream
    NAME names it) and checks one exists in production (--no-stream skips both).
    """
    import asyncio
    import signal

    from safeship.observe._logging import configure_logging
    from safeship.outbox import Relay, RelayConfig

    settings = settings_or_exit(database_url=database_url)
    url = url or settings.broker_url
    if not url:
        fail("no broker: pass --url or set SAFESHIP_BROKER_URL (e.g. nats://127.0.0.1:4222)")
    kind = broker_of(url, broker)
    setup = "off"
    if kind == "nats" and not no_stream:
        creating = stream is not None or settings.environment == "development"
        setup = "create" if creating else "check"
    # The relay reports outages and its backlog as log lines: show them.
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    sink = _sink(
        kind,
        url,
        route,
        subject_prefix=subject_prefix,
        stream=stream,
        stream_setup=setup,
        secret_file=secret_file,
    )
    engine = _engine(database_url)
    config = RelayConfig(batch_size=batch_size, backlog_log_interval=backlog_every)
    relay = Relay(engine, sink, config=config)
    server = None
    if metrics_port is not None:
        from safeship.observe import MetricsServer
        from safeship.observe.scrape import DatabaseCollector, ScrapeSource
        from safeship.outbox import _metrics as outbox_metrics

        collector = DatabaseCollector(engine, [ScrapeSource("outbox", outbox_metrics.read_stored)])
        server = or_fail(
            lambda: MetricsServer(
                port=metrics_port,
                host=metrics_host,
                health=_health(relay, engine),
                also=[collector],
            )
        )
        out.print(f"metrics and health on http://{metrics_host}:{server.port}/metrics and /health")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, relay.stop)
        out.print(f"relaying to {kind} at {masked_url(url)} (Ctrl-C to stop)")
        await relay.run()

    try:
        asyncio.run(run())
    finally:
        if server is not None:
            server.close()
        engine.dispose()
    out.print(f"stopped after {relay.published} events")
