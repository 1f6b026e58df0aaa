"""The rule cases of ``flag_rule_cases`` evaluated by safeship."""

from __future__ import annotations

from datetime import datetime

import pytest

from safeship.flags import EvaluationCounter, FlagSet
from tests.flags.flag_rule_cases import CASES, NOW, Case, state_of


def _compile(case: Case) -> FlagSet:
    return FlagSet.from_unleash(
        state_of(case),
        hostname="test-host",
        clock=lambda: datetime.fromisoformat(NOW),
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule_case(case: Case) -> None:
    flags = _compile(case)
    if isinstance(case.expected, bool):
        assert flags.is_enabled(case.flag, case.context) is case.expected
        assert flags.variant(case.flag, case.context).feature_enabled is case.expected
    else:
        name, payload_value = case.expected
        chosen = flags.variant(case.flag, case.context)
        assert chosen.name == name
        assert (chosen.payload.get("value") if chosen.payload else None) == payload_value


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_counted_evaluation_gives_the_same_answers(case: Case) -> None:
    plain = _compile(case)
    counter = EvaluationCounter()
    counted = plain.with_counter(counter)
    assert counted.is_enabled(case.flag, case.context) is plain.is_enabled(case.flag, case.context)
    assert counted.variant(case.flag, case.context) == plain.variant(case.flag, case.context)
    counts = counter.totals()[case.flag]
    assert counts.yes + counts.no == 2
    assert sum(counts.variants.values()) == 1
