"""Unleash's Python SDK and OpenFeature's OFREP provider, unchanged, against the control plane.

Each checks on/off, a 25% rollout that matches safeship's own evaluation id by id, variants
with payloads, and a change made in the store reaching the SDK while it runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from UnleashClient import UnleashClient  # type: ignore[attr-defined]

from tests.reach.conftest import Plane
from tests.reach.flag_fixtures import COLOURS, OFF, ON, ROLLOUT, USERS, own_answers, seed
from tests.server.support import READ_KEY


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes (the SDK refreshes on its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.fixture
def unleash(plane: Plane, tmp_path: Path) -> Iterator[UnleashClient]:
    seed(plane.store)
    client = UnleashClient(
        url=f"{plane.url}/api",
        app_name="reach-test",
        instance_id=uuid.uuid4().hex,
        refresh_interval=1,
        metrics_interval=1,
        custom_headers={"Authorization": READ_KEY},
        cache_directory=str(tmp_path / "unleash-cache"),
    )
    client.initialize_client()
    try:
        yield client
    finally:
        client.destroy()


def test_unleash_python_sdk_reads_on_and_off_flags(unleash: UnleashClient) -> None:
    assert unleash.is_enabled(ON) is True
    assert unleash.is_enabled(OFF) is False
    assert unleash.is_enabled("no-such-flag") is False


def test_unleash_python_sdk_rollout_matches_safeship_id_by_id(
    unleash: UnleashClient, plane: Plane
) -> None:
    own = own_answers(plane.store)
    theirs = [unleash.is_enabled(ROLLOUT, {"userId": user}) for user in USERS]
    ours = [own.is_enabled(ROLLOUT, {"userId": user}) for user in USERS]
    assert theirs == ours
    assert 0.15 < sum(ours) / len(USERS) < 0.35  # a real 25% split, not all on or all off


def test_unleash_python_sdk_variants_match_safeship(unleash: UnleashClient, plane: Plane) -> None:
    own = own_answers(plane.store)
    for user in USERS[:200]:
        theirs = unleash.get_variant(COLOURS, {"userId": user})
        ours = own.variant(COLOURS, {"userId": user})
        assert theirs["name"] == ours.name
        assert theirs["payload"] == {"type": "string", "value": ours.name.upper()}
    assert {own.variant(COLOURS, {"userId": u}).name for u in USERS} == {"blue", "green"}


def test_a_change_in_the_store_reaches_the_unleash_python_sdk(
    unleash: UnleashClient, plane: Plane
) -> None:
    assert unleash.is_enabled(ON)
    plane.store.set_enabled(ON, False, actor="test")
    assert eventually(lambda: not unleash.is_enabled(ON))


def test_unleash_python_sdk_metrics_mark_flags_as_evaluated(
    unleash: UnleashClient, plane: Plane
) -> None:
    assert plane.store.get(ON).last_evaluated_at is None
    for _ in range(5):
        unleash.is_enabled(ON)
    assert eventually(lambda: plane.store.get(ON).last_evaluated_at is not None)
    assert plane.store.get(OFF).last_evaluated_at is None


@pytest.fixture
def openfeature(plane: Plane) -> OpenFeatureClient:
    seed(plane.store)
    domain = f"reach-{uuid.uuid4().hex}"
    provider = OFREPProvider(plane.url, headers_factory=lambda: {"Authorization": READ_KEY})
    api.set_provider(provider, domain)
    return api.get_client(domain)


def test_ofrep_provider_reads_on_and_off_flags(openfeature: OpenFeatureClient) -> None:
    assert openfeature.get_boolean_value(ON, False) is True
    assert openfeature.get_boolean_value(OFF, True) is False
    missing = openfeature.get_boolean_details("no-such-flag", True)
    assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND


def test_ofrep_provider_rollout_matches_safeship_id_by_id(
    openfeature: OpenFeatureClient, plane: Plane
) -> None:
    own = own_answers(plane.store)
    for user in USERS[:150]:
        context = EvaluationContext(targeting_key=user)
        assert openfeature.get_boolean_value(ROLLOUT, False, context) == own.is_enabled(
            ROLLOUT, {"userId": user}
        )
    without_key = openfeature.get_boolean_details(ROLLOUT, False)
    assert without_key.error_code == ErrorCode.TARGETING_KEY_MISSING


def test_ofrep_provider_variants_carry_their_payload(
    openfeature: OpenFeatureClient, plane: Plane
) -> None:
    own = own_answers(plane.store)
    for user in USERS[:100]:
        details = openfeature.get_string_details(COLOURS, "none", EvaluationContext(user))
        expected = own.variant(COLOURS, {"userId": user}).name
        assert (details.variant, details.value) == (expected, expected.upper())


def test_a_change_in_the_store_reaches_the_ofrep_provider(
    openfeature: OpenFeatureClient, plane: Plane
) -> None:
    assert openfeature.get_boolean_value(OFF, True) is False
    plane.store.set_enabled(OFF, True, actor="test")
    assert eventually(lambda: openfeature.get_boolean_value(OFF, False) is True, timeout=5)


@pytest.mark.postgres
def test_a_change_reaches_the_unleash_python_sdk_through_postgres_notify(
    postgres_plane: Plane, tmp_path: Path
) -> None:
    """On PostgreSQL the control plane's snapshot follows LISTEN/NOTIFY, not a poll."""
    seed(postgres_plane.store)
    client = UnleashClient(
        url=f"{postgres_plane.url}/api",
        app_name="reach-test-pg",
        instance_id=uuid.uuid4().hex,
        refresh_interval=1,
        disable_metrics=True,
        custom_headers={"Authorization": READ_KEY},
        cache_directory=str(tmp_path / "unleash-cache"),
    )
    client.initialize_client()
    try:
        assert client.is_enabled(ON)
        own = own_answers(postgres_plane.store)
        assert [client.is_enabled(ROLLOUT, {"userId": u}) for u in USERS] == [
            own.is_enabled(ROLLOUT, {"userId": u}) for u in USERS
        ]
        postgres_plane.store.set_enabled(ON, False, actor="test")
        assert eventually(lambda: not client.is_enabled(ON))
    finally:
        client.destroy()
