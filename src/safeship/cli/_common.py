"""Shared pieces of the CLI: consoles, readable failures, settings and database opening.

Every command that touches a database goes through :func:`open_engine`: it says which
database on stderr first (password masked), never creates a SQLite file unless asked,
and refuses a schema that is not at this release's revision, so no command but
``safeship db upgrade`` creates or migrates anything.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from safeship.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import sqlalchemy as sa

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides SAFESHIP_DATABASE_URL.", show_default=False),
]
UPGRADE_HINT = "run `safeship db upgrade`"


def typer_app(**options: Any) -> typer.Typer:
    """A command group with plain help: no ``<bool>`` after flags, names never cut."""
    return typer.Typer(rich_markup_mode=None, no_args_is_help=True, **options)


def help_width() -> dict[str, int]:
    """Click's help width: the terminal's when attached, else wide enough not to wrap."""
    if sys.stdout.isatty():
        return {"max_content_width": 120}
    return {"max_content_width": 1000, "terminal_width": 1000}


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def actor() -> str:
    """The audit actor of every CLI change: ``cli:<operating-system user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


def attended() -> bool:
    """True when a person can answer a question (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm_or_fail(question: str, *, yes: bool, option: str = "--yes") -> None:
    """Go on when ``yes``; ask on a terminal; refuse without one, naming ``option``."""
    if yes:
        return
    if not attended():
        fail(f"no terminal to confirm {question!r}: pass {option} to go ahead.")
    if not typer.confirm(question):
        fail("cancelled", code=1)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))


def or_fail(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn database and configuration errors into one readable paragraph."""
    import sqlalchemy as sa

    from safeship.db._migrate import SchemaMismatchError

    try:
        return fn()
    except SettingsError as exc:
        fail(str(exc))
    except SchemaMismatchError as exc:
        fail(str(exc))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        fail(
            f"cannot reach the database ({reason}). Check SAFESHIP_DATABASE_URL or "
            "--database-url and that the server is running."
        )
    except (ValueError, KeyError, OSError) as exc:
        fail(str(exc.args[0]) if exc.args else type(exc).__name__)


def shown_url(url: str) -> str:
    """``url`` as it may be printed: password masked; a SQLite file as its absolute path."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        return f"sqlite:///{path}" if path is not None else "sqlite:// (in memory)"
    masked = {k: ("***" if "password" in k.lower() else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=masked).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")


def say_using(url: str, note: str = "") -> None:
    """Tell stderr which database this command touches (one unwrapped line)."""
    err.print(f"using {shown_url(url)}{note}", highlight=False, markup=False, soft_wrap=True)


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names, resolved; None for in-memory or another database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file::memory:")
    ):
        return None
    return Path(database.removeprefix("file:").split("?", 1)[0]).expanduser().resolve()


def refuse_missing_sqlite(url: str, *, create: bool) -> None:
    path = sqlite_path(url)
    if path is None or path.exists() or create:
        return
    if not path.parent.is_dir():
        fail(f"no SQLite database at {path}: its folder {path.parent} does not exist")
    if attended() and typer.confirm(f"No SQLite database at {path}. Create it?"):
        return
    if attended():
        fail("cancelled", code=1)
    fail(
        f"no SQLite database at {path}. Create it with `safeship db upgrade --create` "
        "(or check SAFESHIP_DATABASE_URL / --database-url)."
    )


def open_engine(
    database_url: str | None,
    *,
    check_schema: bool = True,
    create: bool = False,
    announce: Callable[[str], None] | None = None,
) -> sa.Engine:
    """The engine of one command, after saying which database it is on stderr.

    A SQLite file that does not exist is refused unless ``create`` (or a person at a
    terminal agrees); with ``check_schema``, a database not at this release's revision
    is refused with the revisions and "run `safeship db upgrade`".  ``announce`` gets
    the masked URL instead of stderr (``serve`` logs it as a structured line).
    """
    from safeship.db import create_engine

    settings = settings_or_exit(database_url=database_url)
    if announce is None:
        say_using(settings.database_url)
    else:
        announce(shown_url(settings.database_url))
    refuse_missing_sqlite(settings.database_url, create=create)
    engine = or_fail(lambda: create_engine(settings=settings))
    if check_schema:
        from safeship.db._migrate import ensure_current

        try:
            or_fail(lambda: ensure_current(engine))
        except BaseException:
            engine.dispose()
            raise
    return engine


@contextmanager
def opened(database_url: str | None, **options: Any) -> Iterator[sa.Engine]:
    """:func:`open_engine` for one command, disposed (connections closed) afterwards."""
    engine = open_engine(database_url, **options)
    try:
        yield engine
    finally:
        engine.dispose()
