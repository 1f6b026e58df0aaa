"""``safeship outbox ...``: backlog stats, peek at events, retry and purge dead letters,
and run a relay (``safeship outbox relay --broker nats --url ...``)."""

from __future__ import annotations

import json
from typing import Annotated

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


def _sink(broker: str, url: str, route: str | None) -> Sink:
    if broker == "nats":
        from safeship.outbox.sinks.nats import NatsSink

        return NatsSink(url, subject=route or "events.{aggregate_type}.{type}")
    if broker == "rabbitmq":
        from safeship.outbox.sinks.rabbitmq import RabbitMQSink

        return RabbitMQSink(url, routing_key=route or "{aggregate_type}.{type}")
    if broker == "redis":
        from safeship.outbox.sinks.redis_streams import RedisStreamSink

        return RedisStreamSink(url, stream=route or "events:{aggregate_type}")
    return fail(f"--broker must be nats, rabbitmq or redis, got {broker!r}")


@outbox_app.command("relay")
def relay_command(
    broker: Annotated[str, typer.Option(help="nats, rabbitmq or redis.")],
    url: Annotated[str, typer.Option(help="The broker URL, e.g. nats://127.0.0.1:4222.")],
    route: Annotated[str | None, typer.Option(help="Subject/routing key/stream template.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 500,
    database_url: DatabaseOption = None,
) -> None:
    """Run a relay in the foreground until Ctrl-C or SIGTERM."""
    import asyncio
    import signal

    from safeship.observe._logging import configure_logging
    from safeship.outbox import Relay, RelayConfig

    settings = settings_or_exit(database_url=database_url)
    # The relay reports outages as log lines (one per outage, throttled): show them.
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    engine = _engine(database_url)
    relay = Relay(engine, _sink(broker, url, route), config=RelayConfig(batch_size=batch_size))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, relay.stop)
        out.print(f"relaying to {broker} at {url} (Ctrl-C to stop)")
        await relay.run()

    asyncio.run(run())
    out.print(f"stopped after {relay.published} events")
