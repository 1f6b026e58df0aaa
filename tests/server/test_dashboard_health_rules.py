"""The overview's "is it healthy" rules (pure), the chart geometry, the timestamp filter
and the rollout page's words and buttons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.server import _charts as charts
from safeship.server._explain import available_actions, explain_verdict, times
from safeship.server._health_summary import (
    SECTIONS,
    AlertView,
    ArmView,
    BreakerView,
    DatabaseView,
    FlagView,
    IdempotencyView,
    OutboxView,
    Readings,
    RolloutView,
    Thresholds,
    summarize,
    worst,
)
from safeship.server._when import as_datetime, when

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
ARM = ArmView(requests=100, error_rate=0.01, p95=0.05)


def healthy(**changes: object) -> Readings:
    base: dict[str, object] = {
        "now": NOW,
        "database": DatabaseView(True, in_use=1, idle=4, capacity=15, waiting=0),
        "flags": [FlagView("checkout", True, 25.0, NOW, "cli:alice")],
        "rollouts": [RolloutView("checkout", "running", "canary", 25.0, ARM, ARM, False)],
        "breakers": [
            BreakerView("orders", "payments", "pod-1", "closed", "automatic", None, False)
        ],
        "outbox": OutboxView(pending=3, dead=0, oldest_age_seconds=2.0, relays=1, in_flight=0),
        "alerts": [],
    }
    base.update(changes)
    return Readings(**base)  # type: ignore[arg-type]


def test_everything_healthy_passes_with_a_reason_per_section() -> None:
    summary = summarize(healthy())
    assert summary.verdict == "pass"
    assert list(summary.sections) == list(SECTIONS)
    assert all(s.status == "pass" and s.findings for s in summary.sections.values())


def test_idempotency_is_judged_only_when_its_table_is_there() -> None:
    assert "idempotency" not in summarize(healthy()).sections
    quiet = summarize(healthy(idempotency=IdempotencyView(in_flight=2, completed_last_hour=9)))
    assert quiet.verdict == "pass"
    assert quiet.sections["idempotency"].findings == ("2 in flight, 9 completed in the last hour",)


def test_an_unknown_idempotency_outcome_is_a_warning_and_unreadable_keys_fail() -> None:
    unknown = summarize(healthy(idempotency=IdempotencyView(unknown=3)))
    assert unknown.verdict == "warn" and unknown.sections["idempotency"].status == "warn"
    assert "3 key(s) with an unknown outcome" in unknown.sections["idempotency"].findings[0]
    broken = summarize(healthy(idempotency=IdempotencyView(readable=False)))
    assert broken.sections["idempotency"].status == "fail" and broken.verdict == "fail"


@pytest.mark.parametrize("state", ["open", "forced_open", "half_open"])
def test_a_breaker_that_turns_calls_away_is_a_warning(state: str) -> None:
    b = BreakerView("orders", "payments", "pod-1", state, "automatic", NOW, False)
    summary = summarize(healthy(breakers=[b]))
    assert summary.verdict == "warn" and summary.sections["breakers"].status == "warn"
    assert "orders/payments on pod-1" in summary.sections["breakers"].findings[0]


def test_a_stale_breaker_report_is_a_warning() -> None:
    b = BreakerView("orders", "payments", "pod-1", "closed", "automatic", None, True)
    assert summarize(healthy(breakers=[b])).sections["breakers"].status == "warn"


def test_a_backlog_with_no_live_relay_is_a_warning_and_says_so() -> None:
    stuck = OutboxView(pending=12, dead=0, oldest_age_seconds=1.0, relays=0, in_flight=0)
    section = summarize(healthy(outbox=stuck)).sections["outbox"]
    assert section.status == "warn" and section.findings == (
        "12 event(s) pending and no relay alive",
    )
    idle = OutboxView(pending=0, dead=0, oldest_age_seconds=0.0, relays=0, in_flight=0)
    assert summarize(healthy(outbox=idle)).sections["outbox"].status == "pass"


def test_an_old_pending_event_and_dead_letters_warn() -> None:
    old = OutboxView(pending=1, dead=2, oldest_age_seconds=301.0, relays=1, in_flight=0)
    section = summarize(healthy(outbox=old)).sections["outbox"]
    assert section.status == "warn" and len(section.findings) == 2


def test_a_live_rollout_in_breach_fails_and_a_rolled_back_one_warns() -> None:
    breach = RolloutView("checkout", "running", "canary", 25.0, ARM, ARM, True)
    assert summarize(healthy(rollouts=[breach])).verdict == "fail"
    undone = RolloutView("checkout", "rolled_back", "canary", 0.0, ARM, ARM, True)
    assert summarize(healthy(rollouts=[undone])).sections["rollouts"].status == "warn"
    done = RolloutView("checkout", "completed", "canary", 100.0, ARM, ARM, False)
    assert summarize(healthy(rollouts=[done])).verdict == "pass"


def test_recent_alerts_warn_and_old_ones_do_not() -> None:
    recent = AlertView(NOW - timedelta(minutes=10), "rolled_back", "rollout x", "guard", None)
    old = AlertView(NOW - timedelta(hours=3), "rolled_back", "rollout x", "guard", None)
    assert summarize(healthy(alerts=[recent])).sections["alerts"].status == "warn"
    assert summarize(healthy(alerts=[old])).sections["alerts"].status == "pass"


def test_database_down_fails_and_a_full_pool_or_lock_waits_warn() -> None:
    assert (
        summarize(healthy(database=DatabaseView(False, detail="OperationalError"))).verdict
        == "fail"
    )
    full = DatabaseView(True, in_use=15, idle=0, capacity=15, waiting=0)
    assert summarize(healthy(database=full)).sections["database"].status == "warn"
    locks = DatabaseView(True, in_use=1, idle=1, capacity=15, waiting=2)
    assert summarize(healthy(database=locks)).sections["database"].status == "warn"


def test_an_unreadable_section_fails_the_verdict() -> None:
    summary = summarize(healthy(rollouts=None, outbox=None))
    assert summary.verdict == "fail"
    assert "could not be read" in summary.sections["outbox"].findings[0]


def test_the_kill_switch_is_a_warning() -> None:
    assert summarize(healthy(killed_at=NOW)).sections["flags"].status == "warn"


def test_thresholds_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="oldest_pending"):
        Thresholds(oldest_pending=timedelta(0))


statuses = st.sampled_from(["pass", "warn", "fail"])


@given(st.lists(statuses, max_size=8))
def test_the_verdict_is_pass_only_when_every_section_passes(found: list[str]) -> None:
    verdict = worst(found)  # type: ignore[arg-type]
    assert (verdict == "pass") == all(s == "pass" for s in found)
    assert verdict == ("fail" if "fail" in found else "warn" if "warn" in found else "pass")


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 50),
    st.sampled_from(["closed", "open", "half_open", "disabled"]),
)
def test_summary_verdict_is_the_worst_section(
    pending: int, dead: int, relays: int, state: str
) -> None:
    summary = summarize(
        healthy(
            outbox=OutboxView(pending, dead, 0.0, relays, 0),
            breakers=[BreakerView("s", "b", "i", state, "automatic", None, False)],
        )
    )
    assert summary.verdict == worst([s.status for s in summary.sections.values()])
    warned = (pending > 0 and relays == 0) or dead > 0 or state in ("open", "half_open")
    assert (summary.verdict == "warn") == warned


# -- charts ---------------------------------------------------------------------------


def test_chart_scales_to_a_round_top_and_labels_times() -> None:
    start = NOW - timedelta(hours=1)
    points = [(start, 0.0), (start + timedelta(minutes=30), 37.0), (NOW, 12.0)]
    c = charts.line_chart([charts.Line("pending", "pending", points)], start=start, end=NOW)
    assert [t["label"] for t in c["y_ticks"]] == ["0", "25", "50"]
    xs = [float(p.split(",")[0]) for p in c["lines"][0]["points"].split()]
    assert xs[0] == c["left"] and xs[-1] == c["right"] and xs == sorted(xs)
    assert c["x_ticks"][0]["iso"] == start.isoformat() and c["x_ticks"][-1]["utc"] == "05:00 UTC"
    assert c["lines"][0]["count"] == 3 and not c["empty"]


def test_chart_without_points_says_it_is_empty_and_refuses_a_backwards_span() -> None:
    c = charts.line_chart([charts.Line("x", "x", ())], start=NOW - timedelta(hours=1), end=NOW)
    assert c["empty"] and c["lines"][0]["points"] == ""
    with pytest.raises(ValueError, match="end after start"):
        charts.line_chart([], start=NOW, end=NOW)


@given(st.floats(min_value=1e-6, max_value=1e12))
def test_nice_top_is_at_least_the_value_and_round(value: float) -> None:
    top = charts.nice_top(value)
    assert top >= value * (1 - 1e-9)
    mantissa = top / 10 ** int(f"{top:e}".split("e")[1])
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)


# -- timestamps -----------------------------------------------------------------------


def test_when_renders_a_time_element_with_readable_utc() -> None:
    html = str(when("2026-12-02T05:00:00.123456+00:00"))
    assert html == ('<time datetime="2026-12-02T05:00:00+00:00">2026-12-02 05:00:00 UTC</time>')
    assert 'datetime="2026-12-02T05:00:00+00:00"' in str(when(1796187600.25))
    assert str(when(None)) == "never" and str(when(None, "start")) == "start"
    assert str(when("<b>")) == "&lt;b&gt;"  # not a time: escaped, as it came
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - SQLite hands back naive UTC datetimes
    assert as_datetime(naive) == datetime(2026, 1, 1, tzinfo=UTC)


# -- the rollout page's words and buttons --------------------------------------------


def test_buttons_match_the_state() -> None:
    assert available_actions("rolled_back", "canary") == []
    assert available_actions("completed", "on") == []
    assert available_actions("running", "canary") == ["pause", "advance", "rollback", "abort"]
    assert available_actions("paused", "canary") == ["resume", "advance", "rollback", "abort"]
    assert "promote" in available_actions("running", "shadow")
    assert "advance" not in available_actions("running", "shadow")


def test_the_verdict_is_explained_in_words() -> None:
    verdict = {
        "breach": True,
        "promotable": False,
        "combined": 16800.0,
        "breached_metric": "errors",
        "evidence": [
            {"metric": "errors", "candidate_events": 40, "control_events": 3,
             "e_value": 22400.0, "threshold": 133.333, "promotion_e_value": 0.0},
        ],
    }  # fmt: skip
    words = explain_verdict(verdict, alpha=0.01, status="running")
    assert words[0].startswith("The candidate is worse than control: the evidence is 168×")
    assert "40 in the candidate and 3 in control" in words[1]
    assert "under 1%" in words[-1]
    calm = explain_verdict(
        {"breach": False, "promotable": False, "combined": 2.0, "evidence": []},
        alpha=0.01,
        status="rolled_back",
    )
    assert calm[0] == "The rollout is rolled back: the guard no longer acts on it."
    assert "0.02×" in calm[1]
    assert times(2.54) == "2.5×" and times(0.5) == "0.5×"


# -- the sampler's bucket and retention rules (SQLite in memory) -------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.floats(0, 600, allow_nan=False)), min_size=1, max_size=30
    )
)
def test_samplers_store_one_row_per_bucket_within_retention(
    moments: list[tuple[int, float]],
) -> None:
    import sqlalchemy as sa

    from safeship.server._samples import Point, Sampler, bucket_of, samples

    engine = sa.create_engine("sqlite://")
    samples.metadata.create_all(engine, tables=[samples])
    clock = [0.0]
    base = 1_800_000_000.0
    fleet = [
        Sampler(
            engine,
            lambda: [Point("outbox", "", "pending", 1.0)],
            interval=10.0,
            retention=timedelta(seconds=60),
            clock=lambda: clock[0],
        )
        for _ in range(3)
    ]
    latest = base
    for who, offset in sorted(moments, key=lambda m: m[1]):  # time only moves forward
        clock[0] = latest = base + offset
        fleet[who].sample_once()
    with engine.connect() as conn:
        stored = sorted(conn.execute(sa.select(samples.c.bucket)).scalars())
    seen = {bucket_of(base + o, 10.0) for _, o in moments}
    cutoff = bucket_of(latest - 60, 10.0)
    assert stored == sorted(b for b in seen if b >= cutoff)
    engine.dispose()
