"""Compilation of a state in Unleash's format into immutable per-flag evaluators.

Each feature becomes a ``CompiledFlag`` with two plain functions, ``check(context) -> bool``
and ``pick(context) -> Variant``, closed over pre-parsed rules. The work is done here, once:
flags that are off, have no strategies or start with an unconditional strategy become
constants; strategies after an unconditional one are dropped; strategies that can never
match are removed; constraint values, group-id prefixes and variant tables are prepared.

A state whose shape is unusable (not an object, ``features`` or ``segments`` not a list)
raises ``FlagStateError``. One bad entry never takes the others down: a feature that is
not an object, has no name or repeats a name is skipped, a segment that is not an object
or has no integer id is skipped (strategies using it never match), and a rule that cannot
be evaluated as written becomes a rule that never matches. Each is reported as a
``FlagProblem``; ``strict=True`` turns the first problem into a ``FlagStateError`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from safeship.flags._codegen import FlagPlan, Pick, Ticks, generate
from safeship.flags._constraints import Check, Ignored, RuleError
from safeship.flags._model import FlagProblem, FlagStateError
from safeship.flags._strategies import Environment, Segments, StrategyPlan, compile_strategy
from safeship.flags._variants import VariantPlan, compile_variants, plan_variants


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    """One flag, ready to evaluate. ``constant`` is its answer when no context can change it."""

    name: str
    plan: FlagPlan
    check: Check
    pick: Pick
    source: str
    constant: bool | None
    variant_names: frozenset[str]
    problems: tuple[FlagProblem, ...]

    def counted(self, ticks: Ticks) -> tuple[Check, Pick]:
        """The same evaluators, advancing the counter ticks at each answer."""
        check, pick, _ = generate(self.plan, ticks)
        return check, pick


def compile_state(
    state: object,
    env: Environment,
    *,
    strict: bool = False,
    skipped: list[FlagProblem] | None = None,
) -> dict[str, CompiledFlag]:
    """Compile every feature of a state; raises ``FlagStateError`` when its shape is unusable.

    Entries skipped (features and segments that cannot be used at all) are appended to
    ``skipped``, with ``flag`` empty when the entry has no usable name.
    """
    if not isinstance(state, Mapping):
        raise FlagStateError(
            f"a flag state is an object, not {type(state).__name__}", field="state"
        )
    features = state.get("features")
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise FlagStateError("must be a list of features", field="features")
    report: list[FlagProblem] = []
    segments = _segments(state.get("segments"), report)
    raw_by_name = _features_by_name(features, report)
    if strict and report:
        first = report[0]
        raise FlagStateError(first.message, flag=first.flag or None, field=first.field)
    plans = {name: _safe_plan(name, raw, segments, env) for name, raw in raw_by_name.items()}
    flags = {
        name: _finish(name, plan, problems, raw_by_name, plans)
        for name, (plan, problems) in plans.items()
    }
    if strict:
        problems = [problem for flag in flags.values() for problem in flag.problems]
        if problems:
            raise FlagStateError.from_problems(problems)
    if skipped is not None:
        skipped.extend(report)
    return flags


def _segments(raw: object, report: list[FlagProblem]) -> dict[int, Sequence[Any]]:
    """Segment id -> its constraints; entries without an integer id are skipped."""
    if raw is None:
        return {}
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise FlagStateError("must be a list of segments", field="segments")
    segments: dict[int, Sequence[Any]] = {}
    for index, segment in enumerate(raw):
        segment_id = segment.get("id") if isinstance(segment, Mapping) else None
        if not isinstance(segment_id, int) or isinstance(segment_id, bool):
            report.append(
                FlagProblem("", f"segments[{index}]", "a segment is an object with an integer id")
            )
            continue
        constraints = segment.get("constraints")
        segments[segment_id] = [] if constraints is None else constraints
    return segments


def _features_by_name(
    features: Sequence[Any], report: list[FlagProblem]
) -> dict[str, Mapping[str, Any]]:
    by_name: dict[str, Mapping[str, Any]] = {}
    for index, raw in enumerate(features):
        if not isinstance(raw, Mapping):
            report.append(FlagProblem("", f"features[{index}]", "a feature is an object"))
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            report.append(FlagProblem("", f"features[{index}].name", "must be a non-empty string"))
        elif name in by_name:
            report.append(FlagProblem(name, "name", "appears twice in the state"))
        else:
            by_name[name] = raw
    return by_name


def _safe_plan(
    name: str, raw: Mapping[str, Any], segments: Segments, env: Environment
) -> tuple[FlagPlan, tuple[FlagProblem, ...]]:
    """The feature's plan; a value no check foresaw turns this flag off, never the others."""
    try:
        return _plan_feature(name, raw, segments, env)
    except Exception as exc:  # noqa: BLE001 - one flag's data must not break every flag
        message = f"cannot be compiled ({type(exc).__name__}: {exc})"
        return FlagPlan(name, None, None), (FlagProblem(name, "", message),)


@dataclass
class _Build:
    """What one feature's compilation collects on the way."""

    flag: str
    problems: list[FlagProblem]
    ignored: Ignored

    def off(self, where: str, problem: RuleError) -> None:
        field = where if not problem.field else f"{where}.{problem.field}".strip(".")
        self.problems.append(FlagProblem(self.flag, field, problem.message))

    def finish(self) -> tuple[FlagProblem, ...]:
        notes = [FlagProblem(self.flag, f, m, "ignored") for f, m in self.ignored]
        return tuple(self.problems + notes)


def _plan_feature(
    name: str, raw: Mapping[str, Any], segments: Segments, env: Environment
) -> tuple[FlagPlan, tuple[FlagProblem, ...]]:
    build = _Build(name, [], [])
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        build.off("enabled", RuleError("", f"must be true or false, not {enabled!r}"))
        enabled = False
    variants = _feature_variants(raw, name, env, build)
    strategies = _strategies(raw, name, segments, env, build)
    if not enabled:
        strategies = None
    return FlagPlan(name, strategies, variants), build.finish()


def _feature_variants(
    raw: Mapping[str, Any], name: str, env: Environment, build: _Build
) -> VariantPlan | None:
    try:
        table = compile_variants(raw.get("variants"))
    except RuleError as problem:
        build.off("variants", problem)
        return None
    return None if table is None else plan_variants(table, name, env.randint)


def _strategies(
    raw: Mapping[str, Any], name: str, segments: Segments, env: Environment, build: _Build
) -> tuple[StrategyPlan, ...] | None:
    """The strategies that can match, in order, ending at the first unconditional one.

    ``None`` means the flag is off for every context. No strategies at all means on for
    every context, as in Unleash.
    """
    listed = raw.get("strategies")
    if listed is None or (isinstance(listed, Sequence) and not listed):
        return (StrategyPlan((), None, None),)
    if isinstance(listed, str) or not isinstance(listed, Sequence):
        build.off("strategies", RuleError("", "must be a list of strategies"))
        return None
    kept: list[StrategyPlan] = []
    for index, item in enumerate(listed):
        seen = len(build.ignored)
        try:
            strategy = compile_strategy(
                item, flag=name, segments=segments, env=env, ignored=build.ignored
            )
        except RuleError as problem:
            build.off(f"strategies[{index}]", problem)
            continue
        finally:
            build.ignored[seen:] = [
                (f"strategies[{index}].{f}", m) for f, m in build.ignored[seen:]
            ]
        if strategy is not None:
            kept.append(strategy)
            if strategy.unconditional:
                break
    return tuple(kept) or None


def _variant_names(plan: FlagPlan) -> frozenset[str]:
    names = {"disabled"}
    tables = [plan.variants] + [strategy.variants for strategy in plan.strategies or ()]
    for variants in tables:
        if variants is not None:
            names.update(variant.name for variant in variants.table.variants)
    return frozenset(names)


def _constant(plan: FlagPlan) -> bool | None:
    if plan.gate is not None:
        return None
    if plan.strategies is None:
        return False
    return True if plan.strategies[0].unconditional else None


def _finish(
    name: str,
    plan: FlagPlan,
    problems: tuple[FlagProblem, ...],
    raw_by_name: Mapping[str, Mapping[str, Any]],
    plans: Mapping[str, tuple[FlagPlan, tuple[FlagProblem, ...]]],
) -> CompiledFlag:
    listed = raw_by_name[name].get("dependencies")
    if listed:
        try:
            plan = FlagPlan(name, plan.strategies, plan.variants, _gate(listed, raw_by_name, plans))
        except RuleError as problem:
            problems = (*problems, FlagProblem(name, problem.field, problem.message))
            plan = FlagPlan(name, None, plan.variants)
        except Exception as exc:  # noqa: BLE001 - as in _safe_plan: this flag only
            message = f"cannot be compiled ({type(exc).__name__}: {exc})"
            problems = (*problems, FlagProblem(name, "dependencies", message))
            plan = FlagPlan(name, None, plan.variants)
    check, pick, source = generate(plan)
    return CompiledFlag(
        name, plan, check, pick, source, _constant(plan), _variant_names(plan), problems
    )


Requirement = tuple[Check, Pick, bool, frozenset[str]]


def _gate(
    listed: object,
    raw_by_name: Mapping[str, Mapping[str, Any]],
    plans: Mapping[str, tuple[FlagPlan, tuple[FlagProblem, ...]]],
) -> Check:
    if isinstance(listed, str) or not isinstance(listed, Sequence):
        raise RuleError("dependencies", "must be a list of dependencies")
    requirements = tuple(
        _requirement(item, index, raw_by_name, plans) for index, item in enumerate(listed)
    )

    def parents_allow(context: Mapping[str, Any]) -> bool:
        for parent_check, parent_pick, expected, variants in requirements:
            if not expected:
                if parent_check(context):
                    return False
            elif variants:
                chosen = parent_pick(context)
                if not chosen.feature_enabled or chosen.name not in variants:
                    return False
            elif not parent_check(context):
                return False
        return True

    return parents_allow


def _requirement(
    item: object,
    index: int,
    raw_by_name: Mapping[str, Mapping[str, Any]],
    plans: Mapping[str, tuple[FlagPlan, tuple[FlagProblem, ...]]],
) -> Requirement:
    where = f"dependencies[{index}]"
    if not isinstance(item, Mapping) or not isinstance(item.get("feature"), str):
        raise RuleError(where, "a dependency is an object with a 'feature' name")
    parent = item["feature"]
    if parent not in plans:
        raise RuleError(f"{where}.feature", f"depends on {parent!r}, which does not exist")
    if raw_by_name[parent].get("dependencies"):
        raise RuleError(
            f"{where}.feature", f"depends on {parent!r}, which has dependencies of its own"
        )
    check, pick, _ = generate(plans[parent][0])
    listed = item.get("variants") or ()
    if isinstance(listed, str) or not isinstance(listed, Sequence):
        raise RuleError(f"{where}.variants", "must be a list of variant names")
    if not all(isinstance(variant, str) for variant in listed):
        raise RuleError(f"{where}.variants", "must be a list of variant names")
    return check, pick, item.get("enabled", True) is not False, frozenset(listed)
