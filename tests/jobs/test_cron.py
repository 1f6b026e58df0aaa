"""Cron expressions: parsing, the day-of-month/day-of-week rule, DST, search properties checked
against brute-force minute iteration, one run per tick with two schedulers, missed ticks."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.db import create_engine
from safeship.jobs import CronError, CronExpr, JobContext, Jobs
from safeship.jobs._cron import fire_due, tick_of


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _ticks(expr: CronExpr, start: datetime, count: int) -> list[datetime]:
    out, t = [], start
    for _ in range(count):
        t = expr.next_after(t)
        out.append(t)
    return out


def _local(expr: CronExpr, ticks: list[datetime]) -> list[str]:
    return [t.astimezone(expr.zone).strftime("%Y-%m-%d %a %H:%M %Z") for t in ticks]


# -- parsing -------------------------------------------------------------------------------


def test_lists_ranges_steps_and_names() -> None:
    expr = CronExpr("5,*/20 9-17/4 * JAN-MAR,DEC mon-fri")
    assert expr.minutes == (0, 5, 20, 40)
    assert expr.hours == (9, 13, 17)
    assert expr.months == {1, 2, 3, 12}
    assert expr.weekdays == {1, 2, 3, 4, 5}
    assert CronExpr("0 0 * * 7").weekdays == {0}  # 7 is Sunday
    assert CronExpr("10/15 * * * *").minutes == (10, 25, 40, 55)


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    start = _utc(2026, 5, 17, 13, 7)
    assert _ticks(CronExpr(macro), start, 3) == _ticks(CronExpr(same_as), start, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "has 5 fields"),
        ("* * * * * *", "has 5 fields"),
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("* 24 * * *", "hour field: 24 is outside 0-23"),
        ("* * 0 * *", "day of month field: 0 is outside 1-31"),
        ("* * * 13 *", "month field: 13 is outside 1-12"),
        ("* * * * 8", "day of week field: 8 is outside 0-7"),
        ("* * * FOO *", "month field: 'FOO' is not a number or a known name"),
        ("* * * * FRI-MON", "day of week field: range 'FRI-MON' runs backwards"),
        ("*/0 * * * *", "minute field: step '0' must be a number 1-99"),
        ("1,,2 * * * *", "minute field: empty list item"),
        ("0 0 30 2 *", "day of month field: '30' never falls in those months"),
        ("@reboot", "unknown cron macro '@reboot'"),
        ("-1 * * * *", "minute field"),
    ],
)
def test_bad_expressions_name_the_field(text: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("*", r"\*")):
        CronExpr(text)


def test_bad_time_zone_and_long_text() -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        CronExpr("* * * * *", "Mars/Olympus")
    with pytest.raises(CronError, match="at most 200"):
        CronExpr("1," * 150 + "1 * * * *")


def test_registry_takes_exactly_one_of_every_or_schedule() -> None:
    jobs = Jobs()

    @jobs.task
    def report(ctx: JobContext) -> None:
        return None

    with pytest.raises(ValueError, match="exactly one"):
        jobs.cron("both", task=report, every=60, schedule="* * * * *")
    with pytest.raises(ValueError, match="exactly one"):
        jobs.cron("neither", task=report)
    with pytest.raises(CronError, match="hour field"):
        jobs.cron("bad", task=report, schedule="0 25 * * *")
    entry = jobs.cron("ok", task=report, schedule="@daily", tz="Europe/Berlin")
    assert entry.schedule == CronExpr("@daily", "Europe/Berlin")


# -- the day rule ----------------------------------------------------------------------------


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 13th of the month OR any Friday (classic cron), from Thu 2026-01-01.
    expr = CronExpr("0 0 13 * FRI")
    days = [t.strftime("%d %a") for t in _ticks(expr, _utc(2026, 1, 1), 5)]
    assert days == ["02 Fri", "09 Fri", "13 Tue", "16 Fri", "23 Fri"]


def test_a_starred_day_field_leaves_the_other_to_decide() -> None:
    # "*/2" in day-of-month begins with "*": only the weekday decides (Mondays).
    monday_only = CronExpr("0 0 */2 * MON")
    assert [t.strftime("%d %a") for t in _ticks(monday_only, _utc(2026, 1, 1), 3)] == [
        "05 Mon",
        "12 Mon",
        "19 Mon",
    ]
    # Day of week starred: only the day of month decides.
    assert [t.day for t in _ticks(CronExpr("0 0 1,15 * *"), _utc(2026, 1, 1), 3)] == [15, 1, 15]


def test_leap_day() -> None:
    assert CronExpr("0 12 29 2 *").next_after(_utc(2026, 3, 1)) == _utc(2028, 2, 29, 12)
    assert CronExpr("0 12 29 2 *").latest_at_or_before(_utc(2026, 3, 1)) == _utc(2024, 2, 29, 12)


# -- daylight saving -------------------------------------------------------------------------


def test_spring_forward_gap_runs_once_right_after_the_gap() -> None:
    # New York jumps 02:00 EST -> 03:00 EDT on 2026-03-08: 02:30 does not exist that day.
    expr = CronExpr("30 2 * * *", "America/New_York")
    assert _local(expr, _ticks(expr, _utc(2026, 3, 7, 12), 3)) == [
        "2026-03-08 Sun 03:00 EDT",
        "2026-03-09 Mon 02:30 EDT",
        "2026-03-10 Tue 02:30 EDT",
    ]
    # Every quarter hour: the four gap times collapse into one run at 03:00, with 03:00's own.
    quarter = CronExpr("*/15 * * * *", "America/New_York")
    assert _local(quarter, _ticks(quarter, _utc(2026, 3, 8, 6, 30), 4)) == [
        "2026-03-08 Sun 01:45 EST",
        "2026-03-08 Sun 03:00 EDT",
        "2026-03-08 Sun 03:15 EDT",
        "2026-03-08 Sun 03:30 EDT",
    ]


def test_fall_back_repeat_runs_a_fixed_time_once() -> None:
    # New York repeats 01:00-02:00 on 2026-11-01 (EDT, then EST): a 01:30 job runs once.
    expr = CronExpr("30 1 * * *", "America/New_York")
    assert _local(expr, _ticks(expr, _utc(2026, 10, 31, 12), 3)) == [
        "2026-11-01 Sun 01:30 EDT",
        "2026-11-02 Mon 01:30 EST",
        "2026-11-03 Tue 01:30 EST",
    ]
    berlin = CronExpr("30 2 * * *", "Europe/Berlin")  # Berlin repeats 02:00-03:00 on 10-25
    ticks = _ticks(berlin, _utc(2026, 10, 24, 12), 2)
    assert _local(berlin, ticks) == ["2026-10-25 Sun 02:30 CEST", "2026-10-26 Mon 02:30 CET"]


def test_fall_back_repeat_keeps_an_every_hour_schedule_running() -> None:
    expr = CronExpr("*/30 * * * *", "America/New_York")
    ticks = _ticks(expr, _utc(2026, 11, 1, 4, 45), 5)
    assert [t - a for a, t in itertools.pairwise(ticks)] == [timedelta(minutes=30)] * 4
    assert _local(expr, ticks) == [
        "2026-11-01 Sun 01:00 EDT",
        "2026-11-01 Sun 01:30 EDT",
        "2026-11-01 Sun 01:00 EST",
        "2026-11-01 Sun 01:30 EST",
        "2026-11-01 Sun 02:00 EST",
    ]


# -- properties against brute force -----------------------------------------------------------

_ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]


def _field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    item = st.one_of(
        number.map(str),
        st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}"),
        st.integers(1, max(1, high - low)).map(lambda n: f"*/{n}"),
        st.tuples(number, st.integers(1, 9)).map(lambda p: f"{p[0]}/{p[1]}"),
        *([st.sampled_from(names)] if names else []),
    )
    return st.one_of(st.just("*"), st.lists(item, min_size=1, max_size=3).map(",".join))


_EXPRS = st.tuples(
    _field(0, 59),
    _field(0, 23),
    st.one_of(st.just("*"), _field(1, 28)),  # days every month has, so ticks stay near
    st.just("*"),
    _field(0, 7, ["MON", "fri", "Sun"]),
).map(" ".join)

_MOMENTS = st.datetimes(
    min_value=datetime(2024, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2031, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=0))

_BRUTE_DAYS = 2


def _is_tick_minute(expr: CronExpr, minute: datetime) -> bool:
    """Brute force: a UTC minute is a tick if its local wall time matches (DST rules aside
    from the gap, whose runs land on the first minute after it)."""
    local = minute.astimezone(ZoneInfo(expr.tz))
    if local.fold == 1 and not expr.every_hour:
        # A repeated wall time runs at its first occurrence only.
        first = local.replace(fold=0)
        if first.astimezone(UTC) != minute:
            return False
    return expr.matches_wall(local.replace(tzinfo=None))


@settings(max_examples=100, deadline=None)
@given(text=_EXPRS, zone=st.sampled_from(_ZONES), moment=_MOMENTS)
def test_next_after_is_later_matches_and_skips_nothing(
    text: str, zone: str, moment: datetime
) -> None:
    expr = CronExpr(text, zone)
    nxt = expr.next_after(moment)
    assert nxt > moment
    local = nxt.astimezone(expr.zone)
    gap_run = local.utcoffset() != (nxt - timedelta(hours=3)).astimezone(expr.zone).utcoffset()
    assert _is_tick_minute(expr, nxt) or gap_run, (text, zone, moment, nxt)
    # No tick minute between moment and nxt (checked over the first few days).
    minute = moment.replace(second=0) + timedelta(minutes=1)
    end = min(nxt, moment + timedelta(days=_BRUTE_DAYS))
    while minute < end:
        assert not _is_tick_minute(expr, minute), (text, zone, moment, minute, nxt)
        minute += timedelta(minutes=1)
    assert expr.latest_at_or_before(nxt) == nxt
    latest = expr.latest_at_or_before(moment)
    assert latest <= moment < expr.next_after(latest)


# -- one run per tick across the fleet ----------------------------------------------------------


def _fire_with_two_schedulers(jobs: Jobs, engine: sa.Engine, moments: list[float]) -> list[str]:
    other = create_engine(engine.url.render_as_string(hide_password=False))
    fired: list[str] = []
    lock = threading.Lock()
    try:
        for now in moments:
            barrier = threading.Barrier(2)

            def schedule(
                bind: sa.Engine, at: float = now, gate: threading.Barrier = barrier
            ) -> None:
                gate.wait()
                names = fire_due(jobs, bind, at) + fire_due(jobs, bind, at + 20)
                with lock:
                    fired.extend(names)

            threads = [threading.Thread(target=schedule, args=(b,)) for b in (engine, other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        other.dispose()
    return fired


def _job_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar_one())


def test_cron_expression_fires_once_per_tick_with_two_schedulers(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task
    def report(ctx: JobContext) -> None:
        return None

    # New York, every quarter hour, across the fall-back repeat (01:00-02:00 twice).
    jobs.cron("quarterly", task=report, schedule="*/15 * * * *", tz="America/New_York")
    jobs.cron("fixed", task=report, schedule="30 1 * * *", tz="America/New_York")
    start = _utc(2026, 11, 1, 4, 50).timestamp()  # 00:50 EDT
    moments = [start + i * 300 for i in range(30)]  # every 5 min for 2.5 h
    fired = _fire_with_two_schedulers(jobs, engine, moments)
    # Quarter hours from 01:00 EDT through 01:45 EST... : 00:50 EDT fires the 00:45 tick,
    # then 01:00-01:45 EDT, 01:00-01:45 EST, 02:00-02:15 EST = 1 + 4 + 4 + 2 = 11.
    assert fired.count("quarterly") == 11
    assert fired.count("fixed") == 2  # the latest past 01:30 (the day before) at start, then one
    assert _job_count(engine) == 13


def test_missed_ticks_run_once_for_the_latest(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task
    def report(ctx: JobContext) -> None:
        return None

    entry = jobs.cron("hourly", task=report, schedule="0 * * * *")
    t0 = _utc(2026, 6, 1, 10, 0, 5).timestamp()
    assert fire_due(jobs, engine, t0) == ["hourly"]
    # Every scheduler down from 10:00 to 15:20: five ticks missed, one run on return.
    back = t0 + 5 * 3600 + 20 * 60
    assert fire_due(jobs, engine, back) == ["hourly"]
    assert fire_due(jobs, engine, back + 30) == []
    assert tick_of(entry, back) == _utc(2026, 6, 1, 15)
    assert fire_due(jobs, engine, t0 + 6 * 3600) == ["hourly"]  # 16:00 as usual
    assert _job_count(engine) == 3
