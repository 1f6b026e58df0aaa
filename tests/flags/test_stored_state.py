"""Stored flag state: every write checked as a whole, clients that never die from it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, upgrade
from safeship.db._schema import flag_segments
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagInUseError, FlagStore, FlagVersionError


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlagStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'flags.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    upgrade(engine)
    yield FlagStore(engine)
    engine.dispose()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


SEGMENTED = {"name": "seg", "enabled": True, "strategies": [{"name": "default", "segments": [1]}]}


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ({"features": [], "segments": [{"id": 1, "constraints": "x"}]}, "segments[0].constraints"),
        ({"features": [], "segments": [{"id": 1, "constraints": {}}]}, "segments[0].constraints"),
        ({"features": [], "segments": [{"constraints": []}]}, "segments[0].id"),
        ({"features": [], "segments": [{"id": 10**23}]}, "segments[0].id"),
        ({"features": [], "segments": [{"id": True}]}, "segments[0].id"),
        (
            {"features": [], "segments": [{"id": 1, "constraints": [5]}]},
            "segments[0].constraints[0]",
        ),
        ({"features": [], "segments": [{"id": 1}, {"id": 1}]}, "segments[1].id"),
        ({"features": [], "segments": {}}, "segments"),
        ({"features": [SEGMENTED]}, "features[0].strategies[0].segments[0]"),
        ({"features": [{"name": "a\u202eb"}]}, "features[0].name"),
        ({"features": [{"name": "a"}, {"name": "a"}]}, "features[1].name"),
        ({"features": [{"name": "a", "description": "x\x00"}]}, "features[0].description"),
        (
            {"features": [{"name": "a", "dependencies": [{"feature": "missing"}]}]},
            "features[0].dependencies[0].feature",
        ),
    ],
)
def test_a_bad_import_is_refused_whole_naming_the_field(
    store: FlagStore, state: dict[str, Any], field: str
) -> None:
    store.create("kept", actor="t")
    before = store.state()
    with pytest.raises(FlagDefinitionError) as caught:
        store.import_unleash(state, actor="t")
    assert caught.value.field == field
    assert store.state() == before  # nothing stored, not even the version bump


def test_a_segment_is_checked_even_when_no_flag_uses_it_and_good_ones_import(
    store: FlagStore,
) -> None:
    good = {"id": 1, "constraints": [{"contextName": "userId", "operator": "IN", "values": ["7"]}]}
    store.import_unleash({"features": [SEGMENTED], "segments": [good]}, actor="t")
    assert FlagClient(store=store, start=False).refresh()


def test_deleting_a_parent_is_refused_while_a_flag_depends_on_it(store: FlagStore) -> None:
    store.create("parent", actor="t")
    store.create("child", actor="t", definition={"dependencies": [{"feature": "parent"}]})
    with pytest.raises(FlagInUseError, match="child"):
        store.delete("parent", actor="t")
    store.delete("child", actor="t")
    store.delete("parent", actor="t")


def test_an_edit_made_against_an_old_version_is_refused(store: FlagStore) -> None:
    created = store.create("f", actor="t")
    store.set_enabled("f", True, actor="t", expected_version=created.version)
    with pytest.raises(FlagVersionError) as caught:
        store.rollout("f", 50, actor="t", expected_version=created.version)
    assert caught.value.current == store.get("f").version
    assert store.get("f").to_dict()["rollout_percent"] == 100.0


def test_concurrent_edits_from_one_version_let_exactly_one_through(store: FlagStore) -> None:
    read = store.create("f", actor="t").version
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def edit(percent: int) -> None:
        barrier.wait()
        try:
            store.rollout("f", percent, actor="t", expected_version=read)
            outcomes.append("ok")
        except FlagVersionError:
            outcomes.append("stale")

    threads = [threading.Thread(target=edit, args=(p,)) for p in range(10, 90, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["stale"] * 7


class _FaultyStore(FlagStore):
    """The real store, whose state() fails while ``broken`` is set (a reader's bug)."""

    broken = False

    def state(self) -> tuple[int, dict[str, Any]]:
        version, state = super().state()
        if self.broken:
            raise RuntimeError("unexpected stored value")
        return version, state


def test_a_client_keeps_its_last_good_snapshot_reports_unhealthy_and_recovers(
    store: FlagStore, caplog: pytest.LogCaptureFixture
) -> None:
    faulty = _FaultyStore(store.engine)
    faulty.create("f", actor="t")
    faulty.set_enabled("f", True, actor="t")
    listen = store.engine.dialect.name == "postgresql"  # LISTEN/NOTIFY there, polling here
    with FlagClient(store=faulty, poll_interval=0.05, push=listen) as client:
        assert client.is_enabled("f")
        faulty.broken = True
        with caplog.at_level(logging.ERROR, logger="safeship.flags"):
            faulty.create("g", actor="t")
            assert wait_until(lambda: client.health()[0] == "fail")
            version = faulty.version()
            assert wait_until(lambda: client.last_refresh is not None)
            for _ in range(3):  # polls of the same bad version are not logged again
                client.refresh()
        assert client.is_enabled("f") and "g" not in client.flags
        logged = [r for r in caplog.records if r.getMessage() == "flags.state_unusable"]
        assert len(logged) == 1 and logged[0].version == version  # type: ignore[attr-defined]
        assert client._thread is not None and client._thread.is_alive()
        faulty.broken = False
        faulty.set_enabled("g", True, actor="t")
        assert wait_until(lambda: client.is_enabled("g"))
        assert client.health()[0] == "pass"


def test_a_client_that_never_had_a_good_snapshot_serves_defaults(store: FlagStore) -> None:
    faulty = _FaultyStore(store.engine)
    faulty.create("f", actor="t", definition={"enabled": True})
    faulty.broken = True
    with FlagClient(store=faulty, poll_interval=0.05, push=False) as client:
        assert client.is_enabled("f", default=True) is True
        assert client.health()[0] == "fail"
        faulty.broken = False
        faulty.create("g", actor="t")
        assert wait_until(lambda: client.ready and client.is_enabled("f"))


def test_a_bad_segment_written_around_the_store_breaks_only_the_flags_using_it(
    store: FlagStore,
) -> None:
    store.import_unleash({"features": [SEGMENTED], "segments": [{"id": 1}]}, actor="t")
    store.create("other", actor="t", definition={"enabled": True})
    with FlagClient(store=store, poll_interval=0.05, push=False) as client:
        assert client.is_enabled("seg")
        with store.engine.begin() as conn:  # what an older version stored unchecked
            conn.execute(
                sa.update(flag_segments).values(definition={"id": 1, "constraints": "oops"})
            )
        store.create("later", actor="t", definition={"enabled": True})
        assert wait_until(lambda: client.is_enabled("later"))  # the refresher lives on
        assert client.is_enabled("other") and not client.is_enabled("seg")
        fresh = FlagClient(store=store, start=False)
        assert fresh.refresh() and fresh.is_enabled("other")


@pytest.mark.parametrize(
    "name",
    [
        "caf\u00e9",  # NFC
        "cafe\u0301",  # NFD
        "pay\u202etnemyap",  # right-to-left override
        "check\u200bout",  # zero-width space
        "\u0441heckout",  # Cyrillic es
        "ｃheckout",  # full-width
        "a b",
        ".",
        "..",
        "x" * 201,
        "",
    ],
)
def test_lookalike_and_malformed_names_are_refused_everywhere(store: FlagStore, name: str) -> None:
    with pytest.raises(FlagDefinitionError, match="name"):
        store.create(name, actor="t")
    with pytest.raises(FlagDefinitionError) as caught:
        store.import_unleash({"features": [{"name": name}]}, actor="t")
    assert caught.value.field == "features[0].name"
    assert store.all() == []


def test_the_names_unleash_allows_import(store: FlagStore) -> None:
    names = ["dx.feature.1-135", "my_flag~2", "Feature(1)!", "it's*", "ns:flag", "x" * 100]
    imported = store.import_unleash({"features": [{"name": n} for n in names]}, actor="t")
    assert imported == names


def test_a_definition_stored_in_an_odd_shape_breaks_neither_the_list_nor_other_flags(
    store: FlagStore,
) -> None:
    from safeship.db._schema import flags

    store.create("odd", actor="t")
    store.create("fine", actor="t", definition={"enabled": True})
    with store.engine.begin() as conn:  # written around the store's checks
        conn.execute(
            sa.update(flags)
            .where(flags.c.name == "odd")
            .values(definition={"name": "odd", "enabled": True, "strategies": [1, "x"]})
        )
    listed = {record.name: record.to_dict() for record in store.all()}
    assert listed["odd"]["rollout_percent"] is None and listed["fine"]["enabled"]
    client = FlagClient(store=store, start=False)
    assert client.refresh() and client.is_enabled("fine") and not client.is_enabled("odd")
    store.set_enabled("odd", False, actor="t")  # an edit fixes nothing it was not asked to


def test_the_kill_switch_works_past_a_definition_that_is_not_an_object(store: FlagStore) -> None:
    from safeship.db._schema import flags

    store.create("on", actor="t", definition={"enabled": True})
    store.create("junk", actor="t")
    with store.engine.begin() as conn:  # written around the store's checks
        conn.execute(sa.update(flags).where(flags.c.name == "junk").values(definition=[1, 2]))
    assert store.kill(actor="t", reason="drill") == {"on": False}
    assert not store.get("on").enabled and not store.get("junk").enabled
