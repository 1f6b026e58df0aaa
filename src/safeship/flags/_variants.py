"""Weighted variants: which variant a context gets, sticky on a field, with overrides.

A list of variants compiles to a selector ``context -> Variant`` over pre-built ``Variant``
objects, so choosing one allocates nothing: an override match wins (the first variant in
list order whose override lists the context's value), otherwise the stickiness value is
hashed with seed 86028157 into ``1..total weight`` and the cumulative weights are searched.
Stickiness comes from the first variant; a strategy's variants that name none inherit the
strategy's own ``stickiness`` parameter (as Unleash does); else ``default``: ``userId``,
then ``sessionId``, then random. A context without the stickiness field gets a random
variant, as in Unleash.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from safeship.flags._constraints import RuleError
from safeship.flags._context import as_text, read
from safeship.flags._hashing import VARIANT_SEED, group_prefix, murmur3
from safeship.flags._model import Variant, make_payload

Selector = Callable[[Mapping[str, Any]], Variant]
RandInt = Callable[[int, int], int]


class Override(NamedTuple):
    """A forced variant for contexts whose ``field`` is one of ``values``."""

    field: str
    values: frozenset[str]
    variant: Variant


class VariantTable(NamedTuple):
    """Compiled variants: what selection needs, and the names metrics will see."""

    variants: tuple[Variant, ...]
    cumulative: tuple[int, ...]
    stickiness: str
    overrides: tuple[Override, ...]

    @property
    def total(self) -> int:
        """The sum of the weights; 0 means there is nothing to choose."""
        return self.cumulative[-1] if self.cumulative else 0


def compile_variants(raw: object, *, inherited: str | None = None) -> VariantTable | None:
    """Compile a ``variants`` list; ``None`` when there is none (or every weight is 0).

    ``inherited`` is the stickiness used when the first variant names none (a strategy's
    ``stickiness`` parameter, for the strategy's variants)."""
    if raw is None:
        return None
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise RuleError("", "variants must be a list")
    variants, cumulative, overrides = [], [], []
    running = 0
    for index, item in enumerate(raw):
        variant, weight = _variant(item, index)
        running += weight
        variants.append(variant)
        cumulative.append(running)
        overrides.extend(_overrides(item, index, variant))
    if running <= 0:
        return None
    stickiness = raw[0].get("stickiness") or inherited or "default"
    if not isinstance(stickiness, str):
        raise RuleError("[0].stickiness", "must be a context field name or 'default'")
    return VariantTable(tuple(variants), tuple(cumulative), stickiness, tuple(overrides))


def _variant(item: object, index: int) -> tuple[Variant, int]:
    if not isinstance(item, Mapping):
        raise RuleError(f"[{index}]", "a variant is an object with name and weight")
    name, weight = item.get("name"), item.get("weight")
    if not isinstance(name, str) or not name:
        raise RuleError(f"[{index}].name", "must be a non-empty string")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise RuleError(f"[{index}].weight", f"must be a whole number >= 0, not {weight!r}")
    try:
        payload = make_payload(item.get("payload"))
    except TypeError as exc:
        raise RuleError(f"[{index}].payload", str(exc)) from None
    return Variant(name, enabled=True, feature_enabled=True, payload=payload), weight


def _overrides(item: Mapping[str, Any], index: int, variant: Variant) -> list[Override]:
    raw = item.get("overrides") or []
    result = []
    for number, override in enumerate(raw if isinstance(raw, Sequence) else [None]):
        where = f"[{index}].overrides[{number}]"
        if not isinstance(override, Mapping) or not isinstance(override.get("contextName"), str):
            raise RuleError(where, "an override is an object with contextName and values")
        values = override.get("values") or []
        texts = frozenset(value if isinstance(value, str) else as_text(value) for value in values)
        result.append(Override(override["contextName"], texts, variant))
    return result


class VariantPlan(NamedTuple):
    """A table ready to select from: its hash prefix, randomness, and a selector function.

    Generated code inlines the hash and search for tables without overrides and calls
    ``selector`` for the others.
    """

    table: VariantTable
    prefix: str
    randint: RandInt
    selector: Selector


def plan_variants(
    table: VariantTable, group_id: str, randint: RandInt | None = None
) -> VariantPlan:
    """Bind a table to its group (the strategy's ``groupId`` or the flag name)."""
    pick_random = randint or random.randint
    selector = build_selector(table, group_id, pick_random)
    return VariantPlan(table, group_prefix(group_id), pick_random, selector)


def build_selector(table: VariantTable, group_id: str, randint: RandInt | None = None) -> Selector:
    """The selector for a compiled table; ``group_id`` is the strategy's group or the flag name."""
    pick_random = randint or random.randint
    choose = _chooser(table, group_prefix(group_id), pick_random)
    if not table.overrides:
        return choose
    overrides = table.overrides

    def select(context: Mapping[str, Any]) -> Variant:
        for field, values, variant in overrides:
            value = read(context, field)
            if value is not None and value in values:
                return variant
        return choose(context)

    return select


def _chooser(table: VariantTable, prefix: str, randint: RandInt) -> Selector:
    variants, cumulative, total = table.variants, table.cumulative, table.total
    stickiness = table.stickiness
    hash_ = murmur3

    def by_random() -> Variant:
        return variants[bisect_left(cumulative, randint(1, total))]

    if stickiness == "random":
        return lambda context: by_random()
    if stickiness == "default":

        def by_default(context: Mapping[str, Any]) -> Variant:
            seed = read(context, "userId")
            if seed is None:
                seed = read(context, "sessionId")
                if seed is None:
                    return by_random()
            target = hash_(prefix + seed, VARIANT_SEED, False) % total + 1
            return variants[bisect_left(cumulative, target)]

        return by_default

    def by_field(context: Mapping[str, Any]) -> Variant:
        seed = read(context, stickiness)
        if seed is None:
            return by_random()
        return variants[
            bisect_left(cumulative, hash_(prefix + seed, VARIANT_SEED, False) % total + 1)
        ]

    return by_field
