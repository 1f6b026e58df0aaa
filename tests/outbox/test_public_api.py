"""The public names of safeship.outbox are the ones docs/outbox.md documents."""

from __future__ import annotations

from pathlib import Path

import safeship.outbox

DOCUMENTED = {
    "CallbackSink",
    "Event",
    "NewEvent",
    "OutboxConnectionError",
    "OutboxPayloadError",
    "Outcome",
    "PermanentError",
    "Relay",
    "RelayConfig",
    "RelayThread",
    "Route",
    "Sink",
    "SinkUnavailableError",
    "Status",
    "astage",
    "astage_many",
    "stage",
    "stage_many",
    "uuid7",
}


def test_all_is_the_documented_api() -> None:
    assert set(safeship.outbox.__all__) == DOCUMENTED
    assert all(hasattr(safeship.outbox, name) for name in DOCUMENTED)


def test_docs_mention_every_entry_point() -> None:
    text = (Path(__file__).parents[2] / "docs" / "outbox.md").read_text()
    for name in (
        "stage(",
        "stage_many(",
        "astage(",
        "astage_many(",
        "Relay(",
        "CallbackSink(",
        "NatsSink(",
        "inbox.seen(",
    ):
        assert name in text
