"""``safeship flags ...``: read and change flags in the store, audited as ``cli:<user>``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from safeship.cli._common import (
    DatabaseOption,
    actor,
    confirm_or_fail,
    fail,
    open_engine,
    or_fail,
    out,
    settings_or_exit,
    typer_app,
)
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags.store import (
    FlagExistsError,
    FlagInUseError,
    FlagNotFoundError,
    FlagRecord,
    FlagStore,
    FlagVersionError,
)
from safeship.settings import flag_key

flags_app = typer_app(help="Feature flags: list, change, roll out, kill switch, delete.")
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
    return FlagStore(open_engine(database_url))


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
        str | None,
        typer.Option(
            help="Context field that keeps a unit's answer stable: default, userId, "
            "sessionId, ... (default: the flag's current one, else default).",
            show_default=False,
        ),
    ] = None,
    reason: Reason = None,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Roll a flag out to a percentage, sticky on a field (kept unless --stickiness)."""
    store = _store(database_url)

    def run() -> FlagRecord:
        # The store keeps the flag's stickiness unless one is given, inside its own lock.
        return store.rollout(
            name,
            percent,
            actor=actor(),
            stickiness=stickiness,
            reason=reason,
            expected_version=if_version,
        )

    _show(_run(run))


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
    """Kill switch: every flag back to its safe value (off unless declared), audited.

    Asks first on a terminal; without one (scripts, CI) it needs --yes.
    """
    store = _store(database_url)
    confirm_or_fail("Turn every flag to its safe value now?", yes=yes)
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


#: Key of safeship's own fields (owner, safe value, ...) in an exported state; Unleash
#: ignores it, and ``flags import`` restores them from it.
METADATA_KEY = "safeship"
_METADATA_FIELDS = ("description", "owner", "safe_value", "lifetime_days")


@flags_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="An Unleash export (JSON); - for stdin.")],
    reason: Reason = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create or replace flags from Unleash's JSON format (with safeship's own fields)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        state = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    metadata = _metadata_of(state)
    store = _store(database_url)

    def run() -> list[str]:
        with store.begin() as conn:  # flags and their fields: all or nothing
            names: list[str] = store.import_unleash(state, actor=actor(), reason=reason, conn=conn)
            for name, fields in metadata.items():
                store.change(
                    name,
                    lambda feature: feature,
                    actor=actor(),
                    action="flag.import_metadata",
                    reason=reason,
                    metadata=fields,
                    conn=conn,
                )
        return names

    names = _run(run)
    out.print(f"imported {len(names)} flag(s)")


def _metadata_of(state: object) -> dict[str, dict[str, Any]]:
    """safeship's fields per flag from an export, checked; {} for a plain Unleash state."""
    section = state.get(METADATA_KEY) if isinstance(state, dict) else None
    if section is None or not isinstance(state, dict):
        return {}
    flags = section.get("flags") if isinstance(section, dict) else None
    if not isinstance(flags, dict):
        fail(f"{METADATA_KEY}.flags: must be an object of flag name to fields")
    features = {f.get("name") for f in state.get("features") or [] if isinstance(f, dict)}
    checked: dict[str, dict[str, Any]] = {}
    for name, fields in flags.items():
        where = f"{METADATA_KEY}.flags.{name}"
        if name not in features:
            fail(f"{where}: no feature of that name in this file")
        if not isinstance(fields, dict) or set(fields) - set(_METADATA_FIELDS):
            fail(f"{where}: an object with only {', '.join(_METADATA_FIELDS)}")
        if not isinstance(fields.get("safe_value", False), bool):
            fail(f"{where}.safe_value: true or false")
        checked[name] = dict(fields)
    return checked


@flags_app.command("export")
def export(
    path: Annotated[Path | None, typer.Argument(help="File to write; stdout when omitted.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Write every flag in Unleash's JSON format, with safeship's own fields."""
    store = _store(database_url)

    def read() -> dict[str, Any]:
        state: dict[str, Any] = store.export_unleash()
        records = {r.name: r for r in store.all()}
        state[METADATA_KEY] = {
            "flags": {
                f["name"]: {k: getattr(records[f["name"]], k) for k in _METADATA_FIELDS}
                for f in state["features"]
                if f["name"] in records
            }
        }
        return state

    text = json.dumps(_run(read), indent=2, ensure_ascii=False)
    if path is None:
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text + "\n")


@flags_app.command("delete")
def delete(
    name: str,
    reason: Reason = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    if_version: IfVersion = None,
    database_url: DatabaseOption = None,
) -> None:
    """Delete a flag for good, audited (refused while other flags depend on it).

    Asks first on a terminal; without one it needs --yes.  Deletes the version it asked
    about (or --if-version): a change in between exits 3 and deletes nothing.
    """
    store = _store(database_url)
    record = _run(lambda: store.get(name))
    confirm_or_fail(f"Delete flag {name!r} (version {record.version}) for good?", yes=yes)
    version = if_version if if_version is not None else record.version
    _run(lambda: store.delete(name, actor=actor(), reason=reason, expected_version=version))
    out.print(f"deleted {name}", highlight=False)


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
