"""Pure parts: ids, partitions, serialization, routing and configuration checks."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.outbox import NewEvent, OutboxPayloadError, RelayConfig, Route, uuid7
from safeship.outbox._model import Event, partition_of
from safeship.outbox._schema import PARTITIONS


def test_uuid7_has_version_7_and_rfc_variant_and_sorts_by_time() -> None:
    first = uuid7()
    ids = [uuid7() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert first.int >> 80 <= ids[-1].int >> 80
    assert len(set(ids)) == 1000


@given(st.text(min_size=1, max_size=255))
def test_partition_of_is_stable_and_in_range(key: str) -> None:
    assert 0 <= partition_of(key) < PARTITIONS
    assert partition_of(key) == partition_of(str(key))


@pytest.mark.parametrize("payload", [object(), {"x": {1, 2}}, math.nan, {"d": b"bytes"}])
def test_unserializable_payload_fails_at_construction_with_advice(payload: object) -> None:
    with pytest.raises(OutboxPayloadError, match="JSON-serializable"):
        NewEvent(aggregate_type="order", aggregate_id="1", type="created", payload=payload)


@pytest.mark.parametrize("field", ["aggregate_type", "aggregate_id", "type"])
def test_empty_or_long_keys_are_rejected(field: str) -> None:
    values: dict[str, Any] = {"aggregate_type": "a", "aggregate_id": "b", "type": "c"}
    for bad in ("", "x" * 256):
        with pytest.raises(ValueError, match=field):
            NewEvent(**{**values, field: bad}, payload=None)


def test_headers_must_be_strings() -> None:
    with pytest.raises(ValueError, match="headers"):
        NewEvent(aggregate_type="a", aggregate_id="b", type="c", payload=1, headers={"x": 1})  # type: ignore[dict-item]


def test_route_formats_template_and_rejects_unknown_fields() -> None:
    event = Event(
        seq=1,
        id=uuid7(),
        aggregate_type="order",
        aggregate_id="42",
        type="created",
        payload=b"{}",
        headers={},
        created_at=__import__("datetime").datetime.now(),
    )
    assert Route("ev.{aggregate_type}.{type}")(event) == "ev.order.created"
    with pytest.raises(ValueError, match="unknown"):
        Route("ev.{tenant}")


def test_a_type_qualified_by_its_aggregate_is_not_repeated_by_any_route() -> None:
    def event(kind: str) -> Event:
        return Event(
            seq=1,
            id=uuid7(),
            aggregate_type="order",
            aggregate_id="42",
            type=kind,
            payload=b"{}",
            headers={},
            created_at=__import__("datetime").datetime.now(),
        )

    assert Route()(event("order.created")) == "order.created"  # RabbitMQ's default key
    assert Route()(event("created")) == "order.created"
    assert (
        Route("t.{aggregate_type}.{type}.{aggregate_id}")(event("order.paid")) == "t.order.paid.42"
    )
    assert Route("{type}")(event("order.paid")) == "order.paid"
    assert Route("{aggregate_type}-{type}")(event("order.paid")) == "order-order.paid"  # as written


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("pipeline_depth", 99), ("max_attempts", True), ("lease_ttl", 0.0)],
)
def test_relay_config_rejects_bad_settings(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RelayConfig(**{field: value})  # type: ignore[arg-type]
