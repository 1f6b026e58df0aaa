"""``safeship jobs``: stats, list, status, retry, cancel and purge on a real database."""

from __future__ import annotations

import json

import sqlalchemy as sa
from typer.testing import CliRunner

from safeship.cli import app
from safeship.jobs import JobContext, Jobs, JobState, status
from safeship.jobs._store import Outcome
from safeship.jobs._store_sqlite import SqliteStore

runner = CliRunner()


def _dead_job(engine: sa.Engine) -> str:
    jobs = Jobs()

    @jobs.task(queue="mail")
    def send(ctx: JobContext) -> None:
        return None

    with engine.begin() as conn:
        job = send.enqueue(conn)
    store = SqliteStore(engine)
    (claimed,) = store.claim_sync(["mail"], 1, "cli-test", 30)
    error = json.dumps({"attempt": 1, "kind": "error", "message": "SMTP down", "at": "now"})
    store.finish_sync([Outcome(job, claimed.token, "dead", error=error)])
    return str(job)


def test_jobs_commands_show_retry_cancel_and_purge(sqlite_engine: sa.Engine) -> None:
    url = ["--database-url", str(sqlite_engine.url)]
    job = _dead_job(sqlite_engine)
    listed = runner.invoke(app, ["jobs", "list", *url])
    assert listed.exit_code == 0, listed.output
    assert "SMTP down" in listed.output and "send" in listed.output
    shown = runner.invoke(app, ["jobs", "stats", "--json", *url])
    assert json.loads(shown.stdout)[0]["dead"] == 1
    assert json.loads(runner.invoke(app, ["jobs", "status", job, *url]).stdout)["state"] == "dead"
    assert "1 job(s) back" in runner.invoke(app, ["jobs", "retry", job, *url]).output
    assert status(sqlite_engine, job).state is JobState.PENDING
    assert "cancelled" in runner.invoke(app, ["jobs", "cancel", job, *url]).output
    purged = runner.invoke(app, ["jobs", "purge", "--yes", "0", *url])
    assert "0 dead letter(s) purged" in purged.output
    assert runner.invoke(app, ["jobs", "status", "not-a-uuid", *url]).exit_code != 0


def test_purge_deletes_only_the_count_the_operator_confirmed(sqlite_engine: sa.Engine) -> None:
    url = ["--database-url", str(sqlite_engine.url)]
    first, second = _dead_job(sqlite_engine), _dead_job(sqlite_engine)
    # Unattended without a count: refused, naming the count to confirm.
    unconfirmed = runner.invoke(app, ["jobs", "purge", *url])
    assert unconfirmed.exit_code != 0 and "--yes 2" in unconfirmed.output
    # The operator saw one dead letter, but two match now: nothing is deleted.
    stale = runner.invoke(app, ["jobs", "purge", "--yes", "1", *url])
    assert stale.exit_code != 0 and "2 dead letters match, not the 1 confirmed" in stale.output
    assert status(sqlite_engine, first).state is JobState.DEAD
    assert status(sqlite_engine, second).state is JobState.DEAD
    one = runner.invoke(app, ["jobs", "purge", first, "--yes", "1", *url])
    assert "1 dead letter(s) purged" in one.output, one.output
    assert (
        "1 dead letter(s) purged"
        in runner.invoke(app, ["jobs", "purge", "--yes", "1", *url]).output
    )
    with sqlite_engine.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action, before FROM safeship_audit ORDER BY id")
        ).all()
    assert [a for a, _ in actions].count("jobs.purge") == 2
