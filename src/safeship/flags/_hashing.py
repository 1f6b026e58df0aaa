"""Stickiness hashing, normalised exactly as Unleash does it so buckets match other SDKs.

A user's bucket is ``murmur3_32("{group_id}:{identifier}", seed) % normaliser + 1`` on the
UTF-8 bytes, unsigned: 1..100 for rollouts (seed 0), 1..total weight for variants (seed
86028157). The compiled evaluators precompute ``"{group_id}:"`` once and call ``mmh3``
directly; the functions here are the readable reference they are tested against.
"""

from __future__ import annotations

import mmh3

ROLLOUT_SEED = 0
VARIANT_SEED = 86028157

murmur3 = mmh3.hash
"""``murmur3(text, seed, signed)``: the positional form is the fastest call."""


def group_prefix(group_id: str) -> str:
    """The text hashed before the identifier: ``"{group_id}:"``."""
    return f"{group_id}:"


def normalized_hash(
    identifier: str, group_id: str, normalizer: int = 100, seed: int = ROLLOUT_SEED
) -> int:
    """The identifier's bucket in ``1..normalizer`` for this group."""
    return int(murmur3(f"{group_id}:{identifier}", seed, False)) % normalizer + 1


def in_rollout(identifier: str, group_id: str, percentage: int) -> bool:
    """Whether the identifier falls inside a ``percentage`` rollout of this group."""
    return percentage > 0 and normalized_hash(identifier, group_id) <= percentage


def variant_bucket(identifier: str, group_id: str, total_weight: int) -> int:
    """The identifier's point in ``1..total_weight`` when choosing among weighted variants."""
    return normalized_hash(identifier, group_id, total_weight, VARIANT_SEED)
