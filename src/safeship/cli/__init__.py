"""The ``safeship`` command: serve, demo, check, db, keys, settings; flags, breakers, rollouts,
outbox.

Every command turns a bad setting or an unreachable dependency into a short paragraph
and a non-zero exit code, never a bare traceback.
"""

from __future__ import annotations

import sys

from safeship._extras import require

require("cli", "typer", "rich", feature="the safeship command")
require("server", "pydantic_settings", "sqlalchemy", feature="the safeship command")

from safeship.cli.breakers import breakers_app  # noqa: E402
from safeship.cli.commands import app  # noqa: E402
from safeship.cli.doctor import db_doctor  # noqa: E402, F401 - registers `safeship db doctor`
from safeship.cli.flags import flags_app  # noqa: E402
from safeship.cli.jobs import jobs_app  # noqa: E402
from safeship.cli.outbox import outbox_app  # noqa: E402
from safeship.cli.rollouts import rollouts_app  # noqa: E402
from safeship.cli.settings_cmd import settings_command  # noqa: E402

app.add_typer(flags_app, name="flags")
app.add_typer(breakers_app, name="breakers")
app.add_typer(rollouts_app, name="rollouts")
app.add_typer(outbox_app, name="outbox")
app.add_typer(jobs_app, name="jobs")
app.command("settings")(settings_command)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
