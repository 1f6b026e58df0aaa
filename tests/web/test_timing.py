"""Timing safety of key verification, measured.

Method: for each kind of wrong key (same length, different length, correct prefix) and
the right key, time many verify_key calls in interleaved rounds (so machine noise hits
every kind alike) and compare the medians of per-round means. Digests make every
comparison 32 bytes against 32 bytes, so the medians must agree within a generous
factor; an early-exit comparison of long raw strings would differ many times over.
The structural test in test_keys.py checks the same property without a clock.
"""

from __future__ import annotations

import statistics
import time

from safeship.web._keys import hash_key, verify_key

CORRECT = "ss_" + "k" * 4000  # long, so any content-dependent comparison would show
ROUNDS = 31
CALLS = 200


def _round_mean(presented: str, stored: str) -> float:
    started = time.perf_counter_ns()
    for _ in range(CALLS):
        verify_key(presented, stored)
    return (time.perf_counter_ns() - started) / CALLS


def test_wrong_keys_and_right_key_take_the_same_time() -> None:
    stored = hash_key(CORRECT)
    candidates = {
        "correct": CORRECT,
        "same_length_wrong": "ss_" + "x" * 4000,
        "correct_prefix": CORRECT[:-1] + "x",
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(ROUNDS):
        for name, presented in candidates.items():
            samples[name].append(_round_mean(presented, stored))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    assert slowest / fastest < 1.5, medians


def test_length_of_a_wrong_key_changes_only_hashing_time() -> None:
    """A short wrong key is hashed faster, but the hash is of the *presented* key: it
    tells an attacker nothing about the stored one. The comparison itself is fixed."""
    stored_short, stored_long = hash_key("ss_a"), hash_key(CORRECT)
    samples: dict[str, list[float]] = {"vs_short": [], "vs_long": []}
    for _ in range(ROUNDS):
        samples["vs_short"].append(_round_mean("ss_guess", stored_short))
        samples["vs_long"].append(_round_mean("ss_guess", stored_long))
    short, long_ = (statistics.median(v) for v in samples.values())
    assert max(short, long_) / min(short, long_) < 1.5
