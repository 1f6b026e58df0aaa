"""A control-plane process that performs one rollout transition and stops dead inside it.

Run as ``crash_child.py URL TRANSITION MARKER``.  Just before the transition's first
write of the rollout's row (the flag's change is already written: before transitions
were one transaction, it was already committed here), the process writes MARKER and
waits to be killed with SIGKILL: the crash between the two former commit points.
MARKER holds the PostgreSQL server process id of the paused connection (empty on SQLite),
so the parent can wait for exactly that server process to end.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from safeship.db import create_engine
from safeship.flags.store import FlagStore
from safeship.rollouts import RolloutGuard, emergency_rollback

ROLLOUT = "orders"


def pause_before_the_rollout_row(engine: sa.Engine, marker: Path) -> None:
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE SAFESHIP_ROLLOUTS "):
            # psycopg 3 knows the server process of the connection; sqlite3 has none.
            backend = getattr(getattr(cursor.connection, "info", None), "backend_pid", None)
            partial = marker.with_suffix(".partial")
            partial.write_text("" if backend is None else str(backend))
            partial.replace(marker)  # whole, or not there at all
            threading.Event().wait()  # until SIGKILL

    sa.event.listen(engine, "before_cursor_execute", before)


def main(url: str, transition: str, marker: Path) -> None:
    engine = create_engine(url)
    guard = RolloutGuard(engine, FlagStore(engine))
    pause_before_the_rollout_row(engine, marker)
    if transition == "evaluate":
        guard.evaluate(ROLLOUT)
    elif transition == "emergency":
        emergency_rollback(guard, actor="oncall", reason="crash test")
    else:
        guard.operate(ROLLOUT, transition, actor="oncall", reason="crash test")
    print("the transition finished without pausing", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
