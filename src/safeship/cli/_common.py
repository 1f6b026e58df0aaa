"""Shared pieces of the CLI: consoles, readable failures, settings loading."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from safeship.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides SAFESHIP_DATABASE_URL.", show_default=False),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))


def or_fail(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn database and configuration errors into one readable paragraph."""
    import sqlalchemy as sa

    try:
        return fn()
    except SettingsError as exc:
        fail(str(exc))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        fail(
            f"cannot reach the database ({reason}). Check SAFESHIP_DATABASE_URL or "
            "--database-url and that the server is running."
        )
    except (ValueError, KeyError, OSError) as exc:
        fail(str(exc.args[0]) if exc.args else type(exc).__name__)
