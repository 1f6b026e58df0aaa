"""``safeship flags ...``: read and change flags in the store, audited as ``cli:<user>``."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from safeship.cli._common import DatabaseOption, fail, or_fail, out, settings_or_exit
from safeship.flags.authoring import FlagDefinitionError
from safeship.flags.store import (
    FlagExistsError,
    FlagInUseError,
    FlagNotFoundError,
    FlagRecord,
    FlagStore,
    FlagVersionError,
)
from safeship.settings import flag_key

flags_app = typer.Typer(
    help="Feature flags: list, change, roll out, kill switch.", no_args_is_help=True
)
Reason = Annotated[str | None, typer.Option(help="Why, for the audit trail.")]
IfVersion = Annotated[
    int | None,
    typer.Option(
        "--if-version",
        min=1,
        help="Change only if the flag is still at this version (as `flags get` showed); "
        "exit 3 if it changed since.",
    ),
]


def _store(database_url: str | None) -> FlagStore:
    from safeship.db import create_engine, upgrade

    settings = settings_or_exit(database_url=database_url)
    engine = create_engine(settings=settings)
    or_fail(lambda: upgrade(engine))
    return FlagStore(engine)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(fn: Any) -> Any:
    def translated() -> Any:
        try:
            return fn()
        except FlagNotFoundError as exc:
            fail(str(exc), code=1)
        except FlagVersionError as exc:
            fail(str(exc), code=3)
        except (FlagExistsError, FlagInUseError, FlagDefinitionError) as exc:
            fail(str(exc))

    return or_fail(translated)


def _show(record: FlagRecord) -> None:
    percent = "custom" if (p := record.to_dict()["rollout_percent"]) is None else f"{p:g}%"
    state = "on" if record.enabled else "off"
    out.print(
        f"{record.name}: {state}, rollout {percent}, {record.to_dict()['summary']} "
        f"(version {record.version})",
        highlight=False,
    )


@flags_app.command("list")
def list_flags(database_url: DatabaseOption = None) -> None:
    """Every flag with its state, rollout and strategies."""
    store = _store(database_url)
    overrides = settings_or_exit(database_url=database_url).flag_overrides
    table = Table()
    for column in ("flag", "state", "rollout", "strategies", "env override", "updated"):
        table.add_column(column)
    for record in _run(store.all):
        data = record.to_dict()
        percent = data["rollout_percent"]
        override = overrides.get(flag_key(record.name))
        table.add_row(
            record.name,
            "on" if record.enabled else "off",
            "custom" if percent is None else f"{percent:g}%",
            data["summary"],
            override.describe() if override else "",
            f"{data['updated_at'][:19]} {record.updated_by}",
        )
    out.print(table)


@flags_app.command("get")
def get(name: str, database_url: DatabaseOption = None) -> None:
    """One flag as JSON (metadata and Unleash definition)."""
    record = _run(lambda: _store(database_url).get(name))
    out.print_json(json.dumps(record.to_dict()))


@flags_app.command("create")
def create(
    name: str,
    description: Annotated[str | None, typer.Option(help="What the flag guards.")] = None,
    owner: Annotated[str | None, typer.Option(help="Who to ask about it.")] = None,
    safe_on: Annotated[
        bool, typer.Option("--safe-on", help="The kill switch turns it on, not off.")
    ] = False,
    lifetime_days: Annotated[int | None, typer.Option(help="Expected lifetime.")] = None,
    reason: Reason = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create a flag (off; when enabled, on for everyone)."""
    store = _store(database_url)
    _show(
        _run(
            lambda: store.create(
                name,
                actor=actor(),
                description=description,
                owner=owner,
                safe_value=safe_on,
                lifetime_days=lifetime_days,
                reason=reason,
            )
        )
    )


@flags_app.command("enable")
def enable(
    name: str,
    reason: Reason = None,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Turn a flag on."""
    store = _store(database_url)
    _show(
        _run(
            lambda: store.set_enabled(
                name, True, actor=actor(), reason=reason, expected_version=if_version
            )
        )
    )


@flags_app.command("disable")
def disable(
    name: str,
    reason: Reason = None,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Turn a flag off."""
    store = _store(database_url)
    _show(
        _run(
            lambda: store.set_enabled(
                name, False, actor=actor(), reason=reason, expected_version=if_version
            )
        )
    )


@flags_app.command("rollout")
def rollout(
    name: str,
    percent: Annotated[str, typer.Argument(help="e.g. 25%")],
    stickiness: Annotated[
        str,
        typer.Option(
            help="Context field that keeps a unit's answer stable: default, userId, sessionId, ..."
        ),
    ] = "default",
    reason: Reason = None,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Roll a flag out to a percentage, sticky on a field."""
    store = _store(database_url)
    _show(
        _run(
            lambda: store.rollout(
                name,
                percent,
                actor=actor(),
                stickiness=stickiness,
                reason=reason,
                expected_version=if_version,
            )
        )
    )


@flags_app.command("target")
def target(
    name: str,
    values: Annotated[list[str], typer.Argument(help="Ids to turn the flag on for.")],
    field: Annotated[str, typer.Option(help="Context field: userId, tenantId, ...")] = "userId",
    reason: Reason = None,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Turn a flag on for listed user or tenant ids."""
    store = _store(database_url)
    _show(
        _run(
            lambda: store.target(
                name, values, actor=actor(), field=field, reason=reason, expected_version=if_version
            )
        )
    )


@flags_app.command("kill")
def kill(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Kill switch: every flag back to its safe value (off unless declared), audited."""
    store = _store(database_url)
    if not yes and not typer.confirm("Turn every flag to its safe value now?"):
        fail("cancelled", code=1)
    changed = _run(lambda: store.kill(actor=actor(), reason=reason))
    out.print(
        f"kill switch engaged: {len(changed)} flag(s) changed "
        f"({', '.join(sorted(changed)) or 'none'})"
    )


@flags_app.command("restore")
def restore(reason: Reason = None, database_url: DatabaseOption = None) -> None:
    """Undo the last kill switch for the flags it changed."""
    store = _store(database_url)
    try:
        restored = or_fail(lambda: store.restore(actor=actor(), reason=reason))
    except ValueError as exc:
        fail(str(exc), code=1)
    out.print(f"restored {len(restored)} flag(s)")


@flags_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="An Unleash export (JSON); - for stdin.")],
    reason: Reason = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create or replace flags from Unleash's JSON format."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        state = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    store = _store(database_url)
    names = _run(lambda: store.import_unleash(state, actor=actor(), reason=reason))
    out.print(f"imported {len(names)} flag(s)")


@flags_app.command("export")
def export(
    path: Annotated[Path | None, typer.Argument(help="File to write; stdout when omitted.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Write every flag in Unleash's JSON format."""
    state = _run(lambda: _store(database_url).export_unleash())
    text = json.dumps(state, indent=2, ensure_ascii=False)
    if path is None:
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text + "\n")


@flags_app.command("stale")
def stale(
    days: Annotated[int, typer.Option(help="Settled this many days counts as stale.")] = 30,
    database_url: DatabaseOption = None,
) -> None:
    """Flags to clean up: settled at 0%/100%, never evaluated, or past their lifetime."""
    report = _run(lambda: _store(database_url).stale(settled_days=days))
    for entry in report:
        out.print(f"{entry['name']}: {'; '.join(entry['reasons'])}", highlight=False)
    if not report:
        out.print("no stale flags")
