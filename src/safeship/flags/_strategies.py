"""Activation strategies: who gets a flag, compiled to a ``StrategyPlan``.

A plan holds the strategy's constraints (its segments' included), its own rule (a sticky
rollout, a list of members, or a custom check) and its variants. ``safeship.flags._codegen``
turns the plans of a flag into one function. A strategy that can never match (a 0%
rollout, a host that is not this one) compiles to ``None``; one that cannot be evaluated
as written raises ``RuleError``, and the flag treats it as never matching.

Built-in strategies, as Unleash defines them: ``default``, ``userWithId``,
``flexibleRollout`` (stickiness ``default``/``userId``/``sessionId``/``random``/any field,
``groupId`` defaulting to the flag name), ``gradualRolloutUserId``,
``gradualRolloutSessionId``, ``gradualRolloutRandom``, ``remoteAddress`` (addresses and
CIDR ranges) and ``applicationHostname``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from safeship.flags._constraints import Check, Constraint, Ignored, RuleError
from safeship.flags._constraints import compile_constraint as _compile_constraint
from safeship.flags._context import as_text, read
from safeship.flags._hashing import group_prefix
from safeship.flags._values import in_networks, parse_ip, parse_network, parse_percentage
from safeship.flags._variants import VariantPlan, compile_variants, plan_variants


@dataclass(frozen=True, slots=True)
class Environment:
    """What compiled rules may consult besides the context: host name, clock and randomness."""

    hostname: str
    now: Callable[[], float]
    randint: Callable[[int, int], int]


class Rollout(NamedTuple):
    """Sticky percentage: in when ``murmur3(prefix + value) % 100 < percentage``.

    ``field`` is ``None`` for default stickiness (``userId``, else ``sessionId``, else a
    random draw); a context without the field is out. At 100% only presence is checked.
    """

    field: str | None
    prefix: str
    percentage: int
    randint: Callable[[int, int], int]


class Members(NamedTuple):
    """In when the field's value is one of ``members`` (``userWithId``)."""

    field: str
    members: frozenset[str]


class Custom(NamedTuple):
    """In when ``check(context)`` says so (random draws, address ranges)."""

    check: Check


Rule = Rollout | Members | Custom


class StrategyPlan(NamedTuple):
    """A compiled strategy: constraints (segments included), its own rule, its variants.

    ``rule`` is ``None`` when the strategy's own test passes every context; ``variants``
    is ``None`` when the flag's variants apply.
    """

    constraints: tuple[Constraint, ...]
    rule: Rule | None
    variants: VariantPlan | None

    @property
    def unconditional(self) -> bool:
        """Whether every context matches (no constraint, no rule)."""
        return not self.constraints and self.rule is None


Segments = Mapping[int, Sequence[Any]]


def compile_strategy(
    raw: object, *, flag: str, segments: Segments, env: Environment, ignored: Ignored
) -> StrategyPlan | None:
    """Compile one strategy of ``flag``; ``None`` when it can never match."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise RuleError("", "a strategy is an object with a string 'name'")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise RuleError("parameters", "must be an object")
    constraints = _constraints(raw, segments, env, ignored)
    rule = _rule(raw["name"], parameters, flag, env, ignored)
    variants = _variants(raw, parameters, flag, env)
    if rule is False:
        return None
    return StrategyPlan(constraints, None if rule is True else rule, variants)


def _constraints(
    raw: Mapping[str, Any], segments: Segments, env: Environment, ignored: Ignored
) -> tuple[Constraint, ...]:
    compiled = _compile_list(raw.get("constraints"), "constraints", env, ignored)
    segment_ids = raw.get("segments") or []
    if not isinstance(segment_ids, Sequence) or isinstance(segment_ids, str):
        raise RuleError("segments", "must be a list of segment ids")
    for index, segment_id in enumerate(segment_ids):
        if not isinstance(segment_id, int) or isinstance(segment_id, bool):
            raise RuleError(
                f"segments[{index}]", f"{segment_id!r} is not a segment id (an integer)"
            )
        if segment_id not in segments:
            raise RuleError(f"segments[{index}]", f"segment {segment_id!r} does not exist")
        where = f"segments[{index}] (segment {segment_id}).constraints"
        compiled.extend(_compile_list(segments[segment_id], where, env, ignored))
    return tuple(compiled)


def _compile_list(raw: object, where: str, env: Environment, ignored: Ignored) -> list[Constraint]:
    if raw is None:
        return []
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise RuleError(where, "must be a list of constraints")
    compiled = []
    for index, item in enumerate(raw):
        seen = len(ignored)
        try:
            compiled.append(_compile_constraint(item, env.now, ignored))
        except RuleError as problem:
            raise RuleError(_join(f"{where}[{index}]", problem.field), problem.message) from None
        ignored[seen:] = [(_join(f"{where}[{index}]", f), m) for f, m in ignored[seen:]]
    return compiled


def _join(prefix: str, field: str) -> str:
    if not field:
        return prefix
    return f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"


def _variants(
    raw: Mapping[str, Any], parameters: Mapping[str, Any], flag: str, env: Environment
) -> VariantPlan | None:
    try:
        inherited = parameters.get("stickiness")
        table = compile_variants(
            raw.get("variants"), inherited=as_text(inherited) if inherited else None
        )
    except RuleError as problem:
        raise RuleError(_join("variants", problem.field), problem.message) from None
    if table is None:
        return None
    group = parameters.get("groupId")
    return plan_variants(table, flag if group is None else as_text(group), env.randint)


Outcome = Rule | bool
"""A strategy's own test: a rule, or a constant when no context can change the answer."""


def _rule(
    name: str, parameters: Mapping[str, Any], flag: str, env: Environment, ignored: Ignored
) -> Outcome:
    if name == "default":
        return True
    if name == "flexibleRollout":
        return _flexible_rollout(parameters, flag, env)
    if name in ("gradualRolloutUserId", "gradualRolloutSessionId"):
        field = "userId" if name == "gradualRolloutUserId" else "sessionId"
        group = _required(parameters, "groupId")
        return _rollout(field, _percentage(parameters, "percentage"), group, env)
    if name == "gradualRolloutRandom":
        return _random(_percentage(parameters, "percentage"), env)
    if name == "userWithId":
        return Members("userId", frozenset(_list_parameter(parameters, "userIds")))
    if name == "remoteAddress":
        return _remote_address(_list_parameter(parameters, "IPs"), ignored)
    if name == "applicationHostname":
        hosts = {host.lower() for host in _list_parameter(parameters, "hostNames")}
        return env.hostname.lower() in hosts
    raise RuleError("name", f"unknown strategy {name!r} (custom strategies are not supported)")


def _required(parameters: Mapping[str, Any], key: str) -> str:
    value = parameters.get(key)
    if value is None:
        raise RuleError(f"parameters.{key}", "is required")
    return value if isinstance(value, str) else as_text(value)


def _list_parameter(parameters: Mapping[str, Any], key: str) -> list[str]:
    return [item.strip() for item in _required(parameters, key).split(",")]


def _percentage(parameters: Mapping[str, Any], key: str) -> int:
    value = parse_percentage(parameters.get(key))
    if value is None:
        raise RuleError(
            f"parameters.{key}", f"must be a whole number 0..100, not {parameters.get(key)!r}"
        )
    return value


def _flexible_rollout(parameters: Mapping[str, Any], flag: str, env: Environment) -> Outcome:
    percentage = _percentage(parameters, "rollout")
    stickiness = parameters.get("stickiness")
    stickiness = "default" if stickiness is None else as_text(stickiness)
    group = parameters.get("groupId")
    group = flag if group is None else as_text(group)
    if stickiness == "random":
        return _random(percentage, env)
    if stickiness == "default":
        if percentage in (0, 100):  # the random fallback makes 100% include everyone
            return percentage == 100
        return Rollout(None, group_prefix(group), percentage, env.randint)
    return _rollout(stickiness, percentage, group, env)


def _rollout(field: str, percentage: int, group: str, env: Environment) -> Outcome:
    """Sticky on one field: a context without the field is never in the rollout."""
    if percentage == 0:
        return False
    return Rollout(field, group_prefix(group), percentage, env.randint)


def _random(percentage: int, env: Environment) -> Outcome:
    if percentage in (0, 100):
        return percentage == 100
    randint = env.randint
    return Custom(lambda context: randint(1, 100) <= percentage)


def _remote_address(entries: list[str], ignored: Ignored) -> Outcome:
    networks = []
    for index, entry in enumerate(entries):
        network = parse_network(entry)
        if network is None:
            ignored.append((f"parameters.IPs[{index}]", f"{entry!r} is not an IP or CIDR range"))
        else:
            networks.append(network)
    ranges = tuple(networks)

    def matches(context: Mapping[str, Any]) -> bool:
        text = read(context, "remoteAddress")
        address = None if text is None else parse_ip(text)
        return address is not None and in_networks(address, ranges)

    return Custom(matches)
