"""``safeship breakers ...``: see every process's circuit breakers and set manual modes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from safeship.cli._common import (
    DatabaseOption,
    actor,
    fail,
    open_engine,
    or_fail,
    out,
    typer_app,
)
from safeship.resilience.board import MODES, BreakerBoard

breakers_app = typer_app(help="Circuit breakers reported by your services.")


def _board(database_url: str | None) -> BreakerBoard:
    engine = open_engine(database_url)
    return BreakerBoard(engine)


@breakers_app.command("list")
def list_breakers(database_url: DatabaseOption = None) -> None:
    """Every reported breaker with its state and window figures."""
    board = _board(database_url)
    now = datetime.now(UTC)
    table = Table()
    for column in ("service", "breaker", "instance", "state", "mode", "window", "reported"):
        table.add_column(column)
    for b in or_fail(board.all):
        window = b.snapshot.get("window") or {}
        figures = f"{window.get('calls', 0)} calls, {100 * (window.get('failure_rate') or 0):.0f}%"
        stale = " (stale)" if b.to_dict(now)["stale"] else ""
        table.add_row(
            b.service,
            b.name,
            b.instance,
            b.state,
            b.mode,
            figures,
            b.reported_at.isoformat()[:19] + stale,
        )
    out.print(table)


@breakers_app.command("mode")
def set_mode(
    service: str,
    name: str,
    mode: Annotated[str, typer.Argument(help="forced_open, disabled, metrics_only or automatic")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Force a breaker open, disable it, observe only, or return it to automatic (reset)."""
    if mode not in MODES:
        fail(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    board = _board(database_url)
    version = or_fail(lambda: board.set_mode(service, name, mode, actor=actor(), reason=reason))
    out.print(
        f"{service}/{name}: {mode} (applied by each process within its report interval; "
        f"version {version})"
    )
