"""The flag store on SQLite and PostgreSQL: versions, audit, kill switch, import/export."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, upgrade
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags._flagset import FlagSet
from safeship.flags.store import FlagExistsError, FlagNotFoundError, FlagStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlagStore]:
    url = (
        f"sqlite:///{tmp_path / 'flags.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = create_engine(url)
    upgrade(engine)
    yield FlagStore(engine)
    engine.dispose()


def evaluate(store: FlagStore, name: str, context: dict[str, object] | None = None) -> bool:
    return FlagSet.from_unleash(store.state()[1]).is_enabled(name, context or {})


def test_every_change_bumps_the_version_and_is_audited(store: FlagStore) -> None:
    assert store.version() == 0
    store.create("checkout-v2", actor="alice", description="new checkout", reason="ticket 1")
    store.set_enabled("checkout-v2", True, actor="bob", reason="go")
    store.rollout("checkout-v2", "25%", actor="bob", stickiness="userId")
    assert store.version() == 3
    history = store.history("checkout-v2")
    assert [h.action for h in history] == ["flag.rollout", "flag.enable", "flag.create"]
    assert history[1].before["enabled"] is False and history[1].after["enabled"] is True
    assert history[1].actor == "bob" and history[1].reason == "go"
    assert store.get("checkout-v2").version == 3


def test_a_no_op_change_writes_nothing(store: FlagStore) -> None:
    store.create("f", actor="a")
    store.set_enabled("f", False, actor="a")
    assert store.version() == 1 and len(store.history("f")) == 1


def test_invalid_changes_leave_state_untouched(store: FlagStore) -> None:
    store.create("f", actor="a")
    with pytest.raises(FlagExistsError):
        store.create("f", actor="a")
    with pytest.raises(FlagDefinitionError):
        store.rollout("f", "150%", actor="a")
    with pytest.raises(FlagDefinitionError):
        store.create(
            "g", actor="a", definition={"name": "g", "enabled": True, "strategies": "not-a-list"}
        )
    with pytest.raises(FlagNotFoundError):
        store.set_enabled("missing", True, actor="a")
    assert store.version() == 1
    assert [r.name for r in store.all()] == ["f"]


def test_kill_switch_turns_every_flag_to_its_safe_value_and_restore_undoes_it(
    store: FlagStore,
) -> None:
    for name in ("a", "b", "c"):
        store.create(name, actor="dev")
    store.create("safe-on", actor="dev", safe_value=True)
    store.set_enabled("a", True, actor="dev")
    store.set_enabled("b", True, actor="dev")
    changed = store.kill(actor="oncall", reason="incident 42")
    assert changed == {"a": False, "b": False, "safe-on": True}
    assert not evaluate(store, "a") and not evaluate(store, "b")
    assert evaluate(store, "safe-on")
    assert store.killed_at() is not None

    store.set_enabled("b", True, actor="oncall", reason="b is fine")  # changed by hand: kept
    restored = store.restore(actor="oncall", reason="reviewed")
    assert restored == {"a": True, "safe-on": False}
    assert evaluate(store, "a") and evaluate(store, "b") and not evaluate(store, "safe-on")
    assert store.killed_at() is None
    with pytest.raises(ValueError, match="not engaged"):
        store.restore(actor="oncall")


def test_import_export_round_trip(store: FlagStore) -> None:
    state = {
        "version": 1,
        "features": [
            {
                "name": "seg-flag",
                "enabled": True,
                "strategies": [
                    {"name": "default", "parameters": {}, "constraints": [], "segments": [1]}
                ],
            },
            {"name": "plain", "enabled": False, "strategies": []},
        ],
        "segments": [
            {"id": 1, "constraints": [{"contextName": "userId", "operator": "IN", "values": ["7"]}]}
        ],
    }
    assert store.import_unleash(state, actor="ops") == ["seg-flag", "plain"]
    exported = store.export_unleash()
    assert {f["name"] for f in exported["features"]} == {"seg-flag", "plain"}
    flags = FlagSet.from_unleash(exported)
    assert flags.is_enabled("seg-flag", {"userId": "7"})
    assert not flags.is_enabled("seg-flag", {"userId": "8"})
    with pytest.raises(FlagDefinitionError, match="features"):
        store.import_unleash({"features": "nope"}, actor="ops")


def test_delete_is_audited(store: FlagStore) -> None:
    store.create("gone", actor="a")
    store.delete("gone", actor="a", reason="cleanup")
    with pytest.raises(FlagNotFoundError):
        store.get("gone")
    assert store.history("gone")[0].action == "flag.delete"


def test_stale_report(store: FlagStore) -> None:
    store.create("settled", actor="a", lifetime_days=10)
    store.create("fresh", actor="a")
    store.rollout("fresh", 50, actor="a")
    store.mark_evaluated(["fresh"])
    later = datetime.now(UTC) + timedelta(days=40)
    report = {r["name"]: r["reasons"] for r in store.stale(settled_days=30, now=later)}
    assert "settled" in report
    assert any("off for" in r for r in report["settled"])
    assert "never evaluated" in report["settled"]
    assert any("lifetime" in r for r in report["settled"])
    assert "fresh" not in report


@pytest.mark.postgres
def test_changes_notify_listeners_at_commit(postgres_url: str) -> None:
    import psycopg

    engine = create_engine(postgres_url)
    upgrade(engine)
    store = FlagStore(engine)
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN safeship_flags")
        store.create("n", actor="a")
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    engine.dispose()
    assert payloads == ["1"]


def test_publish_callback_runs_after_commit_only(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    upgrade(engine)
    seen: list[tuple[int, int]] = []

    def publish(version: int) -> None:
        with engine.connect() as conn:  # a reader must already see the committed version
            seen.append(
                (
                    version,
                    int(
                        conn.execute(
                            sa.text("SELECT version FROM safeship_flag_state")
                        ).scalar_one()
                    ),
                )
            )

    store = FlagStore(engine, publish=publish)
    store.create("p", actor="a")
    with pytest.raises(FlagDefinitionError):
        store.rollout("p", "200%", actor="a")
    engine.dispose()
    assert seen == [(1, 1)]


def _announcing(store: FlagStore) -> tuple[FlagStore, list[int]]:
    published: list[int] = []
    return FlagStore(store.engine, publish=published.append), published


def test_writes_given_the_callers_connection_commit_with_it_then_are_announced(
    store: FlagStore,
) -> None:
    store, published = _announcing(store)
    with store.begin() as conn:
        store.create("a", actor="dev", conn=conn)
        store.set_enabled("a", True, actor="dev", conn=conn)
        assert store.get("a", conn=conn).enabled
        assert published == []  # nothing is announced before the commit
    assert store.get("a").enabled and store.version() == 2
    assert published == [2]  # once, with the newest version
    assert [h.action for h in store.history("a")] == ["flag.enable", "flag.create"]


def test_a_rolled_back_caller_transaction_keeps_and_announces_no_flag_change(
    store: FlagStore,
) -> None:
    store, published = _announcing(store)

    def create_then_fail() -> None:
        with store.begin() as conn:
            store.create("a", actor="dev", conn=conn)
            raise RuntimeError("the caller's own write failed")

    with pytest.raises(RuntimeError):
        create_then_fail()
    assert store.version() == 0 and store.all() == [] and store.history("a") == []
    assert published == []


def test_a_refused_write_in_the_callers_transaction_undoes_only_itself(
    store: FlagStore,
) -> None:
    store, published = _announcing(store)
    with store.begin() as conn:
        store.create("a", actor="dev", conn=conn)
        with pytest.raises(FlagNotFoundError):
            store.set_enabled("missing", True, actor="dev", conn=conn)
        with pytest.raises(FlagDefinitionError):
            store.rollout("a", "150%", actor="dev", conn=conn)
        with pytest.raises(FlagExistsError):
            store.create("a", actor="dev", conn=conn)
        store.set_enabled("a", False, actor="dev", conn=conn)  # no change: nothing written
        store.set_enabled("a", True, actor="dev", conn=conn)
    assert store.version() == 2 and published == [2]
    assert [h.action for h in store.history("a")] == ["flag.enable", "flag.create"]


def test_a_write_in_a_transaction_the_caller_opened_rolls_back_with_it(
    store: FlagStore,
) -> None:
    def create_then_fail() -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.select(1))  # only a read so far: pysqlite has not begun yet
            store.create("a", actor="dev", conn=conn)
            raise RuntimeError("the caller's own write failed")

    with pytest.raises(RuntimeError):
        create_then_fail()
    assert store.version() == 0
    with pytest.raises(FlagNotFoundError):
        store.get("a")


@pytest.mark.postgres
def test_the_kill_switch_and_a_flag_change_take_their_locks_in_one_order(
    postgres_url: str,
) -> None:
    """The kill switch paused just before it bumps the version, a change of one flag
    meanwhile: both finish (they once locked rows and version in opposite orders, and
    PostgreSQL aborted one as a deadlock)."""
    import threading
    import time

    engine, killer_engine = create_engine(postgres_url), create_engine(postgres_url)
    upgrade(engine)
    store = FlagStore(engine)
    store.create("x", actor="dev")
    paused, go = threading.Event(), threading.Event()

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.upper().startswith("UPDATE SAFESHIP_FLAG_STATE SET VERSION"):
            paused.set()
            go.wait(60)

    sa.event.listen(killer_engine, "before_cursor_execute", before)
    errors: list[Exception] = []

    def run(action: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    killer = run(lambda: FlagStore(killer_engine).kill(actor="oncall"))
    assert paused.wait(60)
    changer = run(lambda: store.set_enabled("x", True, actor="dev"))
    deadline = time.monotonic() + 60
    while changer.is_alive() and not _waiting_on_a_lock(engine):  # a state, not a delay
        assert time.monotonic() < deadline
        time.sleep(0.02)
    go.set()
    killer.join(60)
    changer.join(60)
    killer_engine.dispose()
    engine.dispose()
    assert errors == []


def _waiting_on_a_lock(engine: sa.Engine) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql(query).scalar_one())
