"""Prometheus metrics of idempotency keys (default registry, created on first use)."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = [
    "claimed",
    "conflict",
    "duplicate",
    "in_flight",
    "replayed",
    "store_error",
    "unknown_outcome",
]


@cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge

    return {
        "claims": Counter(
            "safeship_idempotency_claims_total", "Keys claimed for a first run.", ["surface"]
        ),
        "duplicates": Counter(
            "safeship_idempotency_duplicates_total",
            "Duplicates detected: a key seen again (replayed, refused or skipped).",
            ["surface"],
        ),
        "replays": Counter(
            "safeship_idempotency_replays_total", "Stored responses sent again for a retry."
        ),
        "conflicts": Counter(
            "safeship_idempotency_conflicts_total",
            "Requests refused for their key (in_flight, payload_mismatch, outcome_unknown).",
            ["reason"],
        ),
        "unknown": Counter(
            "safeship_idempotency_unknown_outcomes_total",
            "First runs that raised or lost their lease: outcome recorded as unknown.",
        ),
        "store_errors": Counter(
            "safeship_idempotency_store_errors_total",
            "Store calls that failed (the request was refused unless fail-open).",
            ["surface"],
        ),
        "in_flight": Gauge(
            "safeship_idempotency_in_flight", "First runs of a key executing in this process."
        ),
    }


@cache
def _child(name: str, label: str) -> Any:
    """One labelled series, looked up once (labels() costs more than the increment)."""
    return _metrics()[name].labels(label)


def claimed(surface: str) -> None:
    _child("claims", surface).inc()


def duplicate(surface: str) -> None:
    _child("duplicates", surface).inc()


def replayed() -> None:
    _metrics()["replays"].inc()


def conflict(reason: str) -> None:
    _child("conflicts", reason).inc()


def unknown_outcome() -> None:
    _metrics()["unknown"].inc()


def store_error(surface: str) -> None:
    _child("store_errors", surface).inc()


def in_flight(delta: int) -> None:
    _metrics()["in_flight"].inc(delta)
