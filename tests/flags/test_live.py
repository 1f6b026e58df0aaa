"""The live client: push and poll refresh, outages, backup boot, overrides, fork, kill switch."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safeship.db import create_engine, upgrade
from safeship.flags.live import FlagClient, apply_overrides, flags_check
from safeship.flags.store import FlagStore
from safeship.settings import FlagOverride
from tests.support.tcp_proxy import TcpProxy


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[FlagStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    upgrade(engine)
    yield FlagStore(engine)
    engine.dispose()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[FlagStore]:
    engine = create_engine(postgres_url)
    upgrade(engine)
    yield FlagStore(engine)
    engine.dispose()


def test_polling_picks_up_changes(sqlite_store: FlagStore) -> None:
    sqlite_store.create("f", actor="t")
    with FlagClient(store=sqlite_store, poll_interval=0.1) as client:
        assert client.ready and not client.is_enabled("f")
        sqlite_store.set_enabled("f", True, actor="t")
        assert wait_until(lambda: client.is_enabled("f"))
        assert client.version == 2
        assert client.health() == ("pass", "version 2 from store")


def test_unknown_flags_answer_the_default(sqlite_store: FlagStore) -> None:
    with FlagClient(store=sqlite_store, poll_interval=1) as client:
        assert client.is_enabled("nope") is False
        assert client.is_enabled("nope", default=True) is True
        assert client.variant("nope").name == "disabled"


@pytest.mark.postgres
def test_push_delivers_changes_without_waiting_for_a_poll(pg_store: FlagStore) -> None:
    pg_store.create("pushed", actor="t")
    with FlagClient(store=pg_store, poll_interval=60) as client:
        assert wait_until(client.listening.is_set)
        started = time.monotonic()
        pg_store.set_enabled("pushed", True, actor="t")
        assert wait_until(lambda: client.is_enabled("pushed"), timeout=5)
        assert time.monotonic() - started < 5  # a 60 s poll could not have done it


@pytest.mark.redis
def test_redis_push_for_sqlite_stores(tmp_path: Path, redis_url: str) -> None:
    from safeship.flags.live import redis_publisher

    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    store = FlagStore(engine, publish=redis_publisher(redis_url))
    store.create("r", actor="t")
    with FlagClient(store=store, poll_interval=60, redis_url=redis_url) as client:
        assert wait_until(client.listening.is_set)
        store.set_enabled("r", True, actor="t")
        assert wait_until(lambda: client.is_enabled("r"), timeout=5)
    engine.dispose()


@pytest.mark.postgres
def test_outage_keeps_the_last_snapshot_and_recovers(postgres_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    engine = create_engine(url)
    upgrade(engine)
    store = FlagStore(engine)
    store.create("f", actor="t")
    store.set_enabled("f", True, actor="t")
    try:
        with FlagClient(store=store, poll_interval=0.1) as client:
            assert client.is_enabled("f")
            proxy.cut()
            assert wait_until(lambda: client.health()[0] == "warn")
            assert client.is_enabled("f")  # still the last good snapshot
            assert "unreachable" in client.health()[1] or "lost" in client.health()[1]
            proxy.restore()
            assert wait_until(lambda: client.health()[0] == "pass", timeout=15)
            store.set_enabled("f", False, actor="t")
            assert wait_until(lambda: not client.is_enabled("f"), timeout=15)
    finally:
        engine.dispose()
        proxy.close()


def test_boots_from_backup_when_the_store_is_down(tmp_path: Path, sqlite_store: FlagStore) -> None:
    backup = tmp_path / "backup" / "flags.json"
    sqlite_store.create("f", actor="t")
    sqlite_store.set_enabled("f", True, actor="t")
    with FlagClient(store=sqlite_store, poll_interval=1, backup_path=backup):
        pass
    assert backup.exists()

    down = FlagStore(create_engine("postgresql://nobody@127.0.0.1:1/none"))
    with FlagClient(store=down, poll_interval=0.2, backup_path=backup) as client:
        assert client.ready and client.is_enabled("f")
        assert client.source == "backup"
        assert client.health()[0] == "warn"


def test_without_store_or_backup_the_client_is_not_ready(tmp_path: Path) -> None:
    down = FlagStore(create_engine("postgresql://nobody@127.0.0.1:1/none"))
    with FlagClient(store=down, poll_interval=0.2, backup_path=tmp_path / "none.json") as c:
        assert not c.ready
        assert c.health()[0] == "fail"
        assert c.is_enabled("anything") is False
        assert flags_check(c)().status == "fail"


def test_environment_overrides_win_over_the_store(sqlite_store: FlagStore) -> None:
    sqlite_store.create("checkout-v2", actor="t")
    sqlite_store.create("search", actor="t")
    sqlite_store.set_enabled("search", True, actor="t")
    overrides = {
        "CHECKOUT_V2": FlagOverride("CHECKOUT_V2", True),
        "SEARCH": FlagOverride("SEARCH", False),
    }
    with FlagClient(store=sqlite_store, poll_interval=1, overrides=overrides) as client:
        assert client.is_enabled("checkout-v2") and not client.is_enabled("search")
        assert client.overridden == {"checkout-v2", "search"}


def test_percentage_override_rolls_out() -> None:
    state = {"version": 1, "features": [{"name": "x", "enabled": False, "strategies": []}]}
    forced, touched = apply_overrides(state, {"X": FlagOverride("X", True, 40.0)})
    assert touched == {"x"}
    assert forced["features"][0]["enabled"] is True
    assert forced["features"][0]["strategies"][0]["parameters"]["rollout"] == "40"


def _child_sees_change(client: FlagClient, conn: object) -> None:
    ok = wait_until(lambda: client.is_enabled("forked"), timeout=10)
    conn.send((ok, client._thread is not None and client._thread.is_alive()))  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_each_forked_child_refreshes_on_its_own(sqlite_store: FlagStore) -> None:
    sqlite_store.create("forked", actor="t")
    with FlagClient(store=sqlite_store, poll_interval=0.1) as client:
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe()
        child = context.Process(target=_child_sees_change, args=(client, child_end))
        child.start()
        sqlite_store.set_enabled("forked", True, actor="t")
        assert parent_end.poll(15), "the forked child never answered"
        seen, thread_alive = parent_end.recv()
        child.join(10)
    assert seen and thread_alive


def test_kill_switch_under_load_turns_everything_off(sqlite_store: FlagStore) -> None:
    names = [f"f{i}" for i in range(20)]
    for name in names:
        sqlite_store.create(name, actor="t")
        sqlite_store.rollout(name, 100, actor="t")
    errors: list[BaseException] = []
    stop = threading.Event()
    with FlagClient(store=sqlite_store, poll_interval=0.05) as client:
        assert all(client.is_enabled(n, {"userId": "1"}) for n in names)

        def hammer() -> None:
            try:
                while not stop.is_set():
                    for n in names:
                        client.is_enabled(n, {"userId": "1"})
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        changed = sqlite_store.kill(actor="oncall", reason="drill")
        assert set(changed) == set(names)
        assert wait_until(lambda: not any(client.is_enabled(n, {"userId": "1"}) for n in names))
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def test_evaluations_are_counted_exported_and_recorded_for_the_stale_report(
    sqlite_store: FlagStore,
) -> None:
    from prometheus_client import REGISTRY, generate_latest

    sqlite_store.create("counted-flag", actor="t")
    sqlite_store.set_enabled("counted-flag", True, actor="t")
    sqlite_store.create("unused-flag", actor="t")
    with FlagClient(store=sqlite_store, poll_interval=1) as client:
        for _ in range(3):
            client.is_enabled("counted-flag")
        client.is_enabled("counted-flag", {"userId": "x"})
        text = generate_latest(REGISTRY).decode()
        assert 'safeship_flag_evaluations_total{flag="counted-flag",result="on"} 4.0' in text
    # close() records usage: the evaluated flag has a last_evaluated_at, the other none
    assert sqlite_store.get("counted-flag").last_evaluated_at is not None
    assert sqlite_store.get("unused-flag").last_evaluated_at is None


def test_force_flags_works_on_a_live_client(sqlite_store: FlagStore) -> None:
    from safeship.flags.testing import force_flags

    sqlite_store.create("forced", actor="t")
    with FlagClient(store=sqlite_store, poll_interval=5) as client:
        assert not client.is_enabled("forced")
        with force_flags(client, {"forced": True}):
            assert client.is_enabled("forced")
        assert not client.is_enabled("forced")


def test_impressions_are_reported_for_flags_that_ask_for_them(sqlite_store: FlagStore) -> None:
    from safeship.flags.live import Impression

    sqlite_store.create(
        "watched",
        actor="t",
        definition={
            "name": "watched",
            "enabled": True,
            "impressionData": True,
            "strategies": [{"name": "default"}],
        },
    )
    sqlite_store.create("quiet", actor="t")
    seen: list[Impression] = []

    def hook(impression: Impression) -> None:
        seen.append(impression)
        if impression.kind == "variant":
            raise RuntimeError("a broken hook never reaches the caller")

    with FlagClient(store=sqlite_store, poll_interval=5, impressions=hook) as client:
        assert client.is_enabled("watched", {"userId": "1"})
        assert not client.is_enabled("quiet")
        assert client.variant("watched").name == "disabled"
    assert [(i.flag, i.kind, i.enabled) for i in seen] == [
        ("watched", "is_enabled", True),
        ("watched", "variant", True),
    ]
    assert seen[0].context == {"userId": "1"}


def _refresher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "safeship-flags" and t.is_alive()]


def test_the_constructor_does_no_io_and_starts_nothing(sqlite_store: FlagStore) -> None:
    import sqlalchemy as sa

    from safeship.testing import capture_logs

    sqlite_store.create("f", actor="t")
    sqlite_store.set_enabled("f", True, actor="t")
    checkouts: list[object] = []
    sa.event.listen(sqlite_store.engine, "checkout", lambda *args: checkouts.append(args))
    client = FlagClient(store=sqlite_store, poll_interval=0.1)
    assert checkouts == [] and _refresher_threads() == [] and not client.running
    assert client.health() == ("fail", "not started: call start() or use `with FlagClient(...)`")
    with capture_logs("safeship.flags") as logs:
        assert client.is_enabled("f") is False and client.is_enabled("f", default=True)
        assert client.variant("f").name == "disabled"
    assert logs.messages() == ["flags.client_not_started"]
    assert checkouts == []  # evaluating never touches the store either
    client.start()
    assert client.running and client.is_enabled("f") and checkouts
    client.close()
    assert not client.running


async def test_async_with_loads_off_the_loop_and_closes(sqlite_store: FlagStore) -> None:
    sqlite_store.create("f", actor="t")
    sqlite_store.set_enabled("f", True, actor="t")
    async with FlagClient(store=sqlite_store, poll_interval=0.1) as client:
        assert client.running and client.ready and client.is_enabled("f")
    assert not client.running


def test_start_is_idempotent_and_start_true_is_deprecated(sqlite_store: FlagStore) -> None:
    with pytest.warns(DeprecationWarning, match=r"client\.start\(\)"):
        client = FlagClient(store=sqlite_store, poll_interval=0.1, start=True)
    client.start()
    assert client.running and len(_refresher_threads()) == 1
    client.close()


def test_evaluation_is_a_plain_method_over_the_current_snapshot(sqlite_store: FlagStore) -> None:
    from safeship.flags import FlagSet

    sqlite_store.create("f", actor="t")
    sqlite_store.set_enabled("f", True, actor="t")
    with FlagClient(store=sqlite_store, poll_interval=5) as client:
        assert "is_enabled" not in vars(client) and "variant" not in vars(client)
        assert client.is_enabled("f")
        client.flags = FlagSet.from_unleash({"version": 1, "features": []})
        assert client.is_enabled("f") is False  # the assigned snapshot answers now
