"""One generated Python function per flag and question (``check`` and ``pick``).

Closures layered per strategy and per constraint cost a call each; a flag with three
constraints and weighted variants paid four times what a hand-written ``if`` chain costs.
So each flag's plan is turned into the source of two small functions, in the shape a
person would write by hand. ``pick`` for three constraints and three weighted variants::

    def pick(context):
        props = context.get("properties")
        v = context.get(F0)                      # environment IN (production, staging)
        if v is None:
            if props:
                v = props.get(F0)
        if v not in M1 and (v.__class__ is str or v is None or text(v) not in M1):
            return D                             # the "disabled" variant
        ...                                      # the two other constraints
        v = context.get(F10)                     # the stickiness value: userId
        ...
        if v is None:
            t = R8(1, 1000)
        else:
            try:
                b = hash_(P9 + v, 86028157, False) % 1000
            except TypeError:                    # not text: made text only then
                b = hash_(P9 + text(v), 86028157, False) % 1000
            t = b + 1
        if t <= 200:
            return V7[0]
        ...

A flag with several strategies gets one ``while True:`` block per strategy, left with
``break`` when a test fails.

Every value from the state (field names, members, prefixes, variants, functions) reaches
the function through its namespace under a generated name (``F0``, ``M0``...); the source
holds only those names, whole-number literals and fixed code, never text from the state.
Identical shapes share one compiled code object, so recompiling a snapshot is cheap.
With counting on, the same generator adds the counter ticks at each return.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import CodeType
from typing import Any

from safeship.flags._constraints import Check, Constraint
from safeship.flags._context import STANDARD_FIELDS, as_text
from safeship.flags._hashing import ROLLOUT_SEED, VARIANT_SEED, murmur3
from safeship.flags._model import DISABLED_VARIANT, NO_VARIANT, Variant
from safeship.flags._strategies import Custom, Members, Rollout, StrategyPlan
from safeship.flags._variants import VariantPlan

Pick = Callable[[Mapping[str, Any]], Variant]
Tick = Callable[[], object]


@dataclass(frozen=True, slots=True)
class FlagPlan:
    """A flag ready for generation.

    ``strategies`` is ``None`` when the flag is off for everyone and ends at the first
    unconditional strategy otherwise; ``gate`` checks the flag's dependencies, if any.
    """

    name: str
    strategies: tuple[StrategyPlan, ...] | None
    variants: VariantPlan | None
    gate: Check | None = None


@dataclass(frozen=True, slots=True)
class Ticks:
    """Counter hooks: ``yes``/``no`` per result, one tick per variant name."""

    yes: Tick
    no: Tick
    variants: Mapping[str, Tick]


def generate(plan: FlagPlan, ticks: Ticks | None = None) -> tuple[Check, Pick, str]:
    """The ``check`` and ``pick`` functions of a flag, and their source (for debugging)."""
    source = _Source(ticks)
    source.function("check", plan)
    source.function("pick", plan)
    text = "\n".join(source.lines) + "\n"
    namespace = source.namespace
    exec(_code(text), namespace)  # noqa: S102 - generated from fixed fragments, see module doc
    return namespace["check"], namespace["pick"], text


@lru_cache(maxsize=4096)
def _code(text: str) -> CodeType:
    return compile(text, "<safeship.flags generated>", "exec")


def _tv(ticks: Ticks, tick: Tick) -> Callable[[Variant], Variant]:
    """A function that counts a returned variant (result tick, then the variant's name)."""
    by_name = ticks.variants

    def counted(variant: Variant) -> Variant:
        tick()
        name_tick = by_name.get(variant.name)
        if name_tick is not None:
            name_tick()
        return variant

    return counted


class _Source:
    """Source lines and the namespace they refer to."""

    def __init__(self, ticks: Ticks | None) -> None:
        self.lines: list[str] = []
        self.ticks = ticks
        self.names: dict[int, str] = {}
        self.namespace: dict[str, Any] = {
            "__builtins__": {},
            "str": str,
            "TypeError": TypeError,
            "text": as_text,
            "hash_": murmur3,
            "bisect": bisect_left,
            "D": DISABLED_VARIANT,
            "NV": NO_VARIANT,
        }
        if ticks is not None:
            self.namespace.update(Y=ticks.yes, N=ticks.no)
            self.namespace.update(TV=_tv(ticks, ticks.yes), TD=_tv(ticks, ticks.no))
        self.custom_fields = False
        self.kind = "check"
        self.flat = False

    def const(self, value: object, prefix: str) -> str:
        """The generated name under which ``value`` is visible to the code (one per object)."""
        key = id(value)
        if key not in self.names:
            name = f"{prefix}{len(self.names)}"
            self.names[key] = name
            self.namespace[name] = value
        return self.names[key]

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def function(self, kind: str, plan: FlagPlan) -> None:
        """Emit ``def check(context)`` or ``def pick(context)`` for the plan.

        One conditional strategy gives straight-line code that returns as soon as a test
        fails; several give one ``while True`` block each, left with ``break``.
        """
        self.kind = kind
        self.add(0, f"def {kind}(context):")
        self.custom_fields = _reads_custom_fields(plan)
        if self.custom_fields:
            self.add(1, 'props = context.get("properties")')
        if plan.gate is not None:
            self.add(1, f"if not {self.const(plan.gate, 'G')}(context):")
            self.off(2)
        strategies = plan.strategies or ()
        self.flat = len(strategies) == 1
        for strategy in strategies:
            variants = strategy.variants or plan.variants
            if strategy.unconditional:
                self.success(1, variants)
                return
            indent = 1 if self.flat else 2
            if not self.flat:
                self.add(1, "while True:")
            for constraint in strategy.constraints:
                self.constraint(indent, constraint)
            if strategy.rule is not None:
                self.rule(indent, strategy.rule)
            self.success(indent, variants)
        if not self.flat:
            self.off(1)

    def fail(self, indent: int) -> None:
        """Leave the current strategy: ``break``, or the flag's "off" answer when flat."""
        if self.flat:
            self.off(indent)
        else:
            self.add(indent, "break")

    def constraint(self, indent: int, constraint: Constraint) -> None:
        """Emit code that leaves the strategy when the constraint fails."""
        inline = constraint.inline
        if inline is not None and inline[0] in ("in", "not_in") and not constraint.lower:
            self.read(indent, constraint.field, as_text=False)
            values = self.const(inline[1], "M")
            self.add(indent, f"if {_membership_fails(inline[0], values, constraint)}:")
        else:
            self.read(indent, constraint.field)
            self.add(indent, f"if not {self.passes(constraint)}:")
        self.fail(indent + 1)

    def read(
        self, indent: int, field: str, *, as_text: bool = True, required: bool = False
    ) -> None:
        """Emit code leaving the field's value in ``v``: ``None`` if absent, text if ``as_text``.

        ``required`` leaves the strategy when the field is absent (checked only on the
        branch where the top level did not have it).
        """
        name = self.const(field, "F")
        self.add(indent, f"v = context.get({name})")
        self.add(indent, "if v is None:")
        if self.custom_fields:
            self.add(indent + 1, "if props:")
        else:
            self.add(indent + 1, 'if props := context.get("properties"):')
        self.add(indent + 2, f"v = props.get({name})")
        if required:
            self.add(indent + 1, "if v is None:")
            self.fail(indent + 2)
        if as_text:
            self.add(indent, "if v.__class__ is not str and v is not None:")
            self.add(indent + 1, "v = text(v)")

    def bucket(self, indent: int, prefix: str, seed: int, modulo: int) -> None:
        """``b`` = the hash of ``prefix + v`` modulo ``modulo`` (``v`` made text if it is not)."""
        self.add(indent, "try:")
        self.add(indent + 1, f"b = hash_({prefix} + v, {seed}, False) % {modulo}")
        self.add(indent, "except TypeError:")
        self.add(indent + 1, f"b = hash_({prefix} + text(v), {seed}, False) % {modulo}")

    def passes(self, constraint: Constraint) -> str:
        """An expression on ``v``: whether the constraint holds."""
        if constraint.inline is None:
            test = self.const(constraint.test, "T")
            missing = (
                f"{test}(None)" if constraint.if_missing is None else repr(constraint.if_missing)
            )
            expression = f"({test}(v) if v is not None else {missing})"
            return f"(not {expression})" if constraint.inverted else expression
        kind, operand = constraint.inline
        values = self.const(operand, "M")
        subject = "v.lower()" if constraint.lower else "v"
        if kind in ("in", "not_in"):
            return _membership(kind, values, constraint)
        if kind == "contains":
            expression = f"{values} in {subject}"
        else:
            expression = f"{subject}.{kind}({values})"
        guarded = f"(v is not None and {expression})"
        return f"(not {guarded})" if constraint.inverted else guarded

    def rule(self, indent: int, rule: Rollout | Members | Custom) -> None:
        """Emit code that leaves the strategy when its rule says no."""
        if isinstance(rule, Custom):
            self.add(indent, f"if not {self.const(rule.check, 'C')}(context):")
            self.fail(indent + 1)
        elif isinstance(rule, Members):
            self.read(indent, rule.field)
            self.add(indent, f"if v not in {self.const(rule.members, 'M')}:")
            self.fail(indent + 1)
        else:
            self.rollout(indent, rule)

    def rollout(self, indent: int, rule: Rollout) -> None:
        prefix = self.const(rule.prefix, "P")
        if rule.field is not None:
            self.read(indent, rule.field, as_text=False, required=True)
            if rule.percentage < 100:
                self.bucket(indent, prefix, ROLLOUT_SEED, 100)
                self.add(indent, f"if b >= {rule.percentage}:")
                self.fail(indent + 1)
            return
        self.read_default_seed(indent)
        self.add(indent, "if v is None:")
        self.add(indent + 1, f"if {self.const(rule.randint, 'R')}(1, 100) > {rule.percentage}:")
        self.fail(indent + 2)
        self.add(indent, "else:")
        self.bucket(indent + 1, prefix, ROLLOUT_SEED, 100)
        self.add(indent + 1, f"if b >= {rule.percentage}:")
        self.fail(indent + 2)

    def read_default_seed(self, indent: int) -> None:
        """``v`` = the ``userId``, else the ``sessionId``, else ``None`` (not yet made text)."""
        self.read(indent, "userId", as_text=False)
        self.add(indent, "if v is None:")
        self.read(indent + 1, "sessionId", as_text=False)

    def success(self, indent: int, variants: VariantPlan | None) -> None:
        if self.kind == "check":
            if self.ticks is not None:
                self.add(indent, "Y()")
            self.add(indent, "return True")
        elif variants is None:
            self.give(indent, "NV", "TV", NO_VARIANT)
        elif variants.table.overrides:
            self.give(indent, f"{self.const(variants.selector, 'S')}(context)", "TV")
        else:
            self.select(indent, variants)

    def select(self, indent: int, plan: VariantPlan) -> None:
        """Emit the weighted choice: hash the stickiness value, search the cumulative weights."""
        table = plan.table
        cumulative, variants = self.const(table.cumulative, "W"), self.const(table.variants, "V")
        randint, prefix = self.const(plan.randint, "R"), self.const(plan.prefix, "P")
        by_chance = f"t = {randint}(1, {table.total})"
        if table.stickiness == "random":
            self.add(indent, by_chance)
        else:
            if table.stickiness == "default":
                self.read_default_seed(indent)
            else:
                self.read(indent, table.stickiness, as_text=False)
            self.add(indent, "if v is None:")
            self.add(indent + 1, by_chance)
            self.add(indent, "else:")
            self.bucket(indent + 1, prefix, VARIANT_SEED, table.total)
            self.add(indent + 1, "t = b + 1")
        if len(table.variants) > 4:
            self.give(indent, f"{variants}[bisect({cumulative}, t)]", "TV")
            return
        for index, weight in enumerate(table.cumulative[:-1]):  # a few comparisons beat bisect
            self.add(indent, f"if t <= {weight}:")
            self.give(indent + 1, f"{variants}[{index}]", "TV", table.variants[index])
        last = len(table.variants) - 1
        self.give(indent, f"{variants}[{last}]", "TV", table.variants[last])

    def give(
        self, indent: int, expression: str, counter: str, known: Variant | None = None
    ) -> None:
        """Return a variant; when counting, tick its result and name (inline when ``known``)."""
        if self.ticks is None:
            self.add(indent, f"return {expression}")
            return
        name_tick = None if known is None else self.ticks.variants.get(known.name)
        if name_tick is None:
            self.add(indent, f"return {counter}({expression})")
            return
        self.add(indent, "Y()" if counter == "TV" else "N()")
        self.add(indent, f"{self.const(name_tick, 'K')}()")
        self.add(indent, f"return {expression}")

    def off(self, indent: int) -> None:
        if self.kind == "check":
            if self.ticks is not None:
                self.add(indent, "N()")
            self.add(indent, "return False")
        else:
            self.give(indent, "D", "TD", DISABLED_VARIANT)


def _membership_fails(kind: str, values: str, constraint: Constraint) -> str:
    """When a case-sensitive ``IN``/``NOT_IN`` fails, testing a value not yet made text.

    Strings (the common case) pay one set lookup; other values are converted only on the
    slow branch, where the first test could not decide.
    """
    member = (kind == "in") != constraint.inverted  # the test passes when v is a member
    if member:
        return f"v not in {values} and (v.__class__ is str or v is None or text(v) not in {values})"
    return f"v in {values} or (v.__class__ is not str and v is not None and text(v) in {values})"


def _membership(kind: str, values: str, constraint: Constraint) -> str:
    """``IN``/``NOT_IN`` on ``v``; ``None`` is never a member, which gives the absent answer."""
    positive = (kind == "in") != constraint.inverted
    if not constraint.lower:
        return f"v in {values}" if positive else f"v not in {values}"
    test = f"v.lower() in {values}" if positive else f"v.lower() not in {values}"
    true_when_missing = (kind == "not_in") != constraint.inverted
    return f"(v is None or {test})" if true_when_missing else f"(v is not None and {test})"


def _reads_custom_fields(plan: FlagPlan) -> bool:
    """Whether the flag reads a non-standard field (then ``props`` is read once, up front)."""
    for strategy in plan.strategies or ():
        fields = [constraint.field for constraint in strategy.constraints]
        rule = strategy.rule
        if isinstance(rule, Rollout | Members) and rule.field is not None:
            fields.append(rule.field)
        for variants in (strategy.variants, plan.variants):
            if variants is not None and variants.table.stickiness not in ("default", "random"):
                fields.append(variants.table.stickiness)
        if any(field not in STANDARD_FIELDS for field in fields):
            return True
    return False
