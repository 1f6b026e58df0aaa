"""``safeship db doctor`` (pools, connection headroom and index health of a database) and
``safeship db lint`` (the migration linter)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from safeship.cli._common import DatabaseOption, err, opened, or_fail, out
from safeship.cli.commands import db_app


@db_app.command("doctor")
def db_doctor(
    processes: Annotated[
        int, typer.Option(min=1, max=10_000, help="App processes that each open the pool.")
    ] = 1,
    reserve: Annotated[
        int, typer.Option(min=0, max=10_000, help="Connections kept free for admins and jobs.")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 when anything needs action.")
    ] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Check pools, headroom and index health (unused, invalid, duplicate, FKs without one)."""
    from safeship.data import diagnose

    with opened(database_url, check_schema=False) as engine:
        report = or_fail(lambda: diagnose(engine, processes=processes, reserve=reserve))
    if as_json:
        out.print_json(json.dumps(report.to_dict(), default=str))
    else:
        _print(report)
    if strict and report.problems:
        raise typer.Exit(1)


def _print(report: object) -> None:
    from safeship.data import DoctorReport

    assert isinstance(report, DoctorReport)
    pools = Table("pool", "kind", "size", "max", "in use", "idle", "waiting", "exhausted")
    for name, p in report.pools.items():
        pools.add_row(
            name, p.kind, str(p.size), str(p.max_size), str(p.in_use), str(p.idle),
            "-" if p.waiting is None else str(p.waiting),
            "-" if p.exhausted_total is None else str(p.exhausted_total),
        )  # fmt: skip
    out.print(pools)
    if report.headroom is not None:
        out.print(report.headroom.describe(), soft_wrap=True)
    if report.indexes is not None:
        scans = Table("index", "table", "scans", "last used", "bytes", title="Index use")
        for row in report.indexes.scans[:15]:
            last = row["last_used"] or "-"
            scans.add_row(
                row["index"], row["table"], str(row["scans"]), str(last), str(row["bytes"])
            )
        out.print(scans)
        if report.indexes.slow_queries:
            slow = Table("mean ms", "calls", "query", title="Slowest statements")
            for row in report.indexes.slow_queries[:10]:
                slow.add_row(str(row["mean_ms"]), str(row["calls"]), row["query"])
            out.print(slow)
    for note in report.notes:
        out.print(f"note: {note}", soft_wrap=True)
    if report.problems:
        out.print(f"{len(report.problems)} finding(s):")
        for line in report.problems:
            out.print(f"  - {line}", soft_wrap=True, highlight=False)
    else:
        out.print("no findings")


@db_app.command("lint")
def db_lint(
    paths: Annotated[
        list[str], typer.Argument(help="Alembic versions folders, revision files or .sql files.")
    ],
    runner_sets_lock_timeout: Annotated[
        bool,
        typer.Option(
            "--runner-sets-lock-timeout",
            help="The migrations run through safe_upgrade, which sets lock_timeout.",
        ),
    ] = False,
) -> None:
    """Lint migrations for long locks and table rewrites; exit 1 on any finding."""
    from safeship.data import lint_migrations

    try:
        findings = lint_migrations(paths, runner_sets_lock_timeout=runner_sets_lock_timeout)
    except (FileNotFoundError, SyntaxError) as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for finding in findings:
        out.print(finding.describe(), highlight=False, soft_wrap=True)
    out.print(f"{len(findings)} finding(s)")
    if findings:
        raise typer.Exit(1)
