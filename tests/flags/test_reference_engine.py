"""safeship against Unleash's reference engine (Yggdrasil), when it is installed.

The rule cases' expectations are checked against the engine other Unleash SDKs embed, and
random rollouts and variant tables are compared answer for answer. Cases marked
``portable=False`` depend on an injected clock or host name, on a documented difference
or on a documented difference (a broken rule is off even when inverted), and are left out.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.flags import FlagSet
from tests.flags.flag_rule_cases import CASES, Case, state_of

engine_module = pytest.importorskip("yggdrasil_engine.engine")

PORTABLE = [case for case in CASES if case.portable]


def _engine(state: dict[str, Any]) -> Any:
    engine = engine_module.UnleashEngine()
    engine.take_state(json.dumps(state))
    return engine


@pytest.mark.parametrize("case", PORTABLE, ids=[case.id for case in PORTABLE])
def test_reference_engine_agrees_with_the_case(case: Case) -> None:
    engine = _engine(state_of(case))
    if isinstance(case.expected, bool):
        assert engine.check_enabled(case.flag, case.context).is_enabled is case.expected
    else:
        chosen = engine.check_variant(case.flag, case.context).variant
        assert chosen.name == case.expected[0]
        assert (chosen.payload or {}).get("value") == case.expected[1]


users = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
weights = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6)
# The engine compiles strategies into a small language of its own and mis-reads a group id
# holding a quote; group ids here keep to the characters real ones use.
groups = st.text(alphabet=string.ascii_letters + string.digits + "-_.:", max_size=10)


@settings(max_examples=60, deadline=None)
@given(
    percent=st.integers(min_value=0, max_value=100),
    group=groups,
    stickiness=st.sampled_from(["userId", "sessionId", "tenant"]),
    weights=weights,
    ids=st.lists(users, min_size=1, max_size=15),
)
def test_rollouts_and_variants_match_the_reference_engine(
    percent: int, group: str, stickiness: str, weights: list[int], ids: list[str]
) -> None:
    variants = [
        {"name": f"v{i}", "weight": w, "stickiness": stickiness} for i, w in enumerate(weights)
    ]
    strategy = {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(percent), "stickiness": stickiness, "groupId": group},
    }
    state = {
        "version": 1,
        "features": [
            {"name": "f", "enabled": True, "strategies": [strategy], "variants": variants}
        ],
    }
    flags, engine = FlagSet.from_unleash(state), _engine(state)
    variants_comparable = sum(weights) > 0  # the engine cannot choose among zero weights
    for identifier in ids:
        context = {
            "userId": identifier,
            "sessionId": identifier,
            "properties": {"tenant": identifier},
        }
        assert flags.is_enabled("f", context) is engine.check_enabled("f", context).is_enabled
        if variants_comparable:
            assert (
                flags.variant("f", context).name == engine.check_variant("f", context).variant.name
            )
