"""``safeship jobs ...``: queue stats, status, dead letters (list, retry, purge),
cancellation, and a worker for the tasks of ``--app module:attribute``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import signal
import uuid
from typing import Annotated

import typer
from rich.table import Table

from safeship.cli._common import (
    DatabaseOption,
    actor,
    confirm_or_fail,
    fail,
    opened,
    or_fail,
    out,
    settings_or_exit,
    typer_app,
)
from safeship.db import record_audit
from safeship.jobs import (
    Jobs,
    PurgeMismatchError,
    Worker,
    cancel,
    count_dead,
    dead_letters,
    purge_dead,
    retry_dead,
    stats,
    status,
)

jobs_app = typer_app(help="Background jobs: queues, status, dead letters, workers.")

IdsArg = Annotated[list[str] | None, typer.Argument(help="Job ids (UUIDs).", show_default=False)]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task's jobs.")]


def _ids(values: list[str] | None) -> list[uuid.UUID] | None:
    if not values:
        return None
    try:
        return [uuid.UUID(v) for v in values]
    except ValueError:
        fail("job ids are UUIDs, e.g. 01a2353c-0b7e-7e22-8d9c-6a8b0f0e2b11")


@jobs_app.command("stats")
def stats_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Jobs per queue: pending, running, interrupted, dead, the oldest pending job's age."""
    with opened(database_url) as engine:
        rows = or_fail(lambda: stats(engine))
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(r) for r in rows]))
        return
    table = Table("queue", "pending", "running", "interrupted", "dead", "oldest pending (s)")
    for r in rows:
        oldest = "-" if r.oldest_pending_seconds is None else f"{r.oldest_pending_seconds:.1f}"
        table.add_row(
            r.queue, str(r.pending), str(r.running), str(r.interrupted), str(r.dead), oldest
        )
    out.print(table)


@jobs_app.command("status")
def status_command(job_id: str, database_url: DatabaseOption = None) -> None:
    """One job's state, attempts, progress, result and error history, as JSON."""
    (parsed,) = _ids([job_id]) or []
    with opened(database_url) as engine:
        found = or_fail(lambda: status(engine, parsed))
    out.print_json(json.dumps(found.as_dict(), default=str))


@jobs_app.command("list")
def list_command(
    task: TaskOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    database_url: DatabaseOption = None,
) -> None:
    """Dead letters, newest first, with their last error."""
    with opened(database_url) as engine:
        rows = or_fail(lambda: dead_letters(engine, task=task, limit=limit))
    table = Table("id", "task", "attempts", "last error")
    for r in rows:
        last = r.errors[-1]["message"] if r.errors else ""
        table.add_row(str(r.id), r.task, str(r.attempts), last[:120])
    out.print(table)


@jobs_app.command("retry")
def retry_command(
    ids: IdsArg = None, task: TaskOpt = None, database_url: DatabaseOption = None
) -> None:
    """Put dead letters (these ids, this task's, or all) back to pending."""
    with opened(database_url) as engine:
        count = or_fail(lambda: retry_dead(engine, ids=_ids(ids), task=task))
    out.print(f"{count} job(s) back to pending")


@jobs_app.command("cancel")
def cancel_command(job_id: str, database_url: DatabaseOption = None) -> None:
    """Cancel a job: at once if pending, cooperatively if running."""
    (parsed,) = _ids([job_id]) or []
    with opened(database_url) as engine:
        state = or_fail(lambda: cancel(engine, parsed))
    out.print(f"{job_id}: {state.value}")


@jobs_app.command("purge")
def purge_command(
    ids: IdsArg = None,
    task: TaskOpt = None,
    yes: Annotated[
        int | None,
        typer.Option("--yes", min=0, help="Confirm this count without asking."),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Delete dead letters (these ids, this task's, or all) for good, after confirming how
    many: if another number matches when the purge runs, nothing is deleted."""
    selected = _ids(ids)
    with opened(database_url) as engine:
        found = or_fail(lambda: count_dead(engine, ids=selected, task=task))
        expected = yes
        if expected is None:
            confirm_or_fail(
                f"Delete {found} dead letters for good?", yes=False, option=f"--yes {found}"
            )
            expected = found

        def run() -> int:
            with engine.begin() as conn:
                count = purge_dead(conn, ids=selected, task=task, expected=expected)
                record_audit(
                    conn,
                    actor=actor(),
                    action="jobs.purge",
                    target="jobs:dead",
                    before={"count": count, "task": task, "ids": [str(i) for i in selected or []]},
                )
            return count

        try:
            count = or_fail(run)
        except PurgeMismatchError as exc:
            fail(str(exc))
    out.print(f"{count} dead letter(s) purged")


@jobs_app.command("worker")
def worker_command(
    app_path: Annotated[str, typer.Option("--app", help="The Jobs registry, as module:attribute.")],
    concurrency: Annotated[int, typer.Option(min=1, max=10000, help="Jobs at once.")] = 100,
    database_url: DatabaseOption = None,
) -> None:
    """Run a worker for the tasks registered on --app until SIGTERM or Ctrl-C."""
    module, _, attribute = app_path.partition(":")
    try:
        registry = getattr(importlib.import_module(module), attribute or "jobs")
    except (ImportError, AttributeError) as error:
        fail(f"--app {app_path}: {error}")
    if not isinstance(registry, Jobs):
        fail(f"--app {app_path} is a {type(registry).__name__}, not safeship.jobs.Jobs")
    settings = settings_or_exit(database_url=database_url)
    worker = Worker(registry, settings.database_url, concurrency=concurrency)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run_sync()
    except KeyboardInterrupt:
        worker.stop()
