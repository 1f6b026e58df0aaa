"""Five-field cron expressions evaluated in a time zone.

``minute hour day-of-month month day-of-week``: each field is ``*``, a number, a name
(``JAN``-``DEC``, ``SUN``-``SAT``), a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``
(``a`` to the field's end), or a comma list of those.  Day of week is 0-7 (0 and 7 are
Sunday).  Macros: ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``,
``@yearly`` (``@annually``).

The day rule of classic cron: when both day fields are restricted (neither begins with
``*``), a day matches if *either* matches; otherwise the restricted one (if any) decides.

Wall times are read in ``tz`` (a zoneinfo name).  Daylight-saving changes:

- a wall time that does not exist (the spring-forward gap) runs once, at the first instant
  after the gap (02:30 on a day that jumps 02:00 → 03:00 runs at 03:00);
- a wall time that occurs twice (the fall-back repeat) runs once, at its first occurrence,
  unless the hour field is ``*``: such a schedule is about elapsed time, so both
  occurrences run (``*/15 * * * *`` keeps running every 15 minutes through the repeat).
"""

from __future__ import annotations

import bisect
import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from safeship.errors import SafeshipError

__all__ = ["CronError", "CronExpr"]

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = {n.upper(): i for i, n in enumerate(calendar.month_abbr) if n}
_DAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
# name, low, high, names
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_MAX_TEXT = 200
# Feb 29 on a Monday can be 28 years away; a matching day always exists within that.
_MAX_DAYS = 366 * 29


class CronError(SafeshipError, ValueError):
    """A cron expression (or its time zone) that cannot be used; the message names the field."""


def _number(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit() or len(text) > 2:
        raise CronError(f"cron {name} field: {text!r} is not a number or a known name")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"cron {name} field: {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, index: int) -> frozenset[int]:
    name, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"cron {name} field: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or len(step_text) > 2 or int(step_text) == 0:
                raise CronError(f"cron {name} field: step {step_text!r} must be a number 1-99")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _number(first, name, low, high, names)
            end = _number(last, name, low, high, names)
            if start > end:
                raise CronError(
                    f"cron {name} field: range {base!r} runs backwards (write it as two ranges)"
                )
        else:
            start = _number(base, name, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed cron expression in a time zone; see the module text for the rules."""

    text: str
    tz: str = "UTC"
    minutes: tuple[int, ...] = field(init=False, repr=False)
    hours: tuple[int, ...] = field(init=False, repr=False)
    days: frozenset[int] = field(init=False, repr=False)
    months: frozenset[int] = field(init=False, repr=False)
    weekdays: frozenset[int] = field(init=False, repr=False)  # 0 = Sunday
    day_rule: str = field(init=False, repr=False)  # "all", "dom", "dow" or "either"
    every_hour: bool = field(init=False, repr=False)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or len(self.text) > _MAX_TEXT:
            raise CronError(f"a cron expression is a string of at most {_MAX_TEXT} characters")
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
            raise CronError(f"unknown time zone {self.tz!r}") from error
        text = self.text.strip()
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                raise CronError(f"unknown cron macro {text!r} (known: {', '.join(_MACROS)})")
            text = _MACROS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)} in {self.text!r}"
            )
        sets = [_parse_field(part, i) for i, part in enumerate(parts)]
        dom_star, dow_star = parts[2].startswith("*"), parts[4].startswith("*")
        rule = (
            "all"
            if dom_star and dow_star
            else "dom"
            if dow_star
            else "dow"
            if dom_star
            else "either"
        )
        if rule == "dom" and not any(
            min(sets[2]) <= calendar.monthrange(2000, m)[1] for m in sets[3]
        ):
            raise CronError(f"cron day of month field: {parts[2]!r} never falls in those months")
        set_ = object.__setattr__
        set_(self, "minutes", tuple(sorted(sets[0])))
        set_(self, "hours", tuple(sorted(sets[1])))
        set_(self, "days", sets[2])
        set_(self, "months", sets[3])
        set_(self, "weekdays", sets[4])
        set_(self, "day_rule", rule)
        set_(self, "every_hour", parts[1].startswith("*") and len(sets[1]) == 24)
        set_(self, "zone", zone)

    # -- matching ----------------------------------------------------------------------

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.day_rule == "all":
            return True
        if self.day_rule == "dom":
            return dom
        if self.day_rule == "dow":
            return dow
        return dom or dow

    def matches_wall(self, wall: datetime) -> bool:
        """Whether a naive local wall time (to the minute) is one the expression names."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall)

    def _instants(self, day: date) -> tuple[datetime, ...]:
        """The UTC instants (sorted) at which ``day`` (local) has a tick."""
        return _day_instants(self, day)

    # -- search ------------------------------------------------------------------------

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware), in UTC."""
        moment = _aware(moment)
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        best: datetime | None = None
        for _ in range(_MAX_DAYS):
            if self.matches_day(day):
                ticks = self._instants(day)
                i = bisect.bisect_right(ticks, moment)
                if i < len(ticks) and (best is None or ticks[i] < best):
                    best = ticks[i]
            if best is not None and _day_start(self.zone, day) > best:
                return best
            day += timedelta(days=1)
        raise CronError(
            f"cron {self.text!r} has no tick within {_MAX_DAYS} days"
        )  # pragma: no cover

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment`` (aware), in UTC."""
        moment = _aware(moment)
        day = moment.astimezone(self.zone).date() + timedelta(days=1)
        best: datetime | None = None
        for _ in range(_MAX_DAYS):
            if self.matches_day(day):
                ticks = self._instants(day)
                i = bisect.bisect_right(ticks, moment)
                if i > 0 and (best is None or ticks[i - 1] > best):
                    best = ticks[i - 1]
            if best is not None and _day_start(self.zone, day + timedelta(days=1)) < best:
                return best
            day -= timedelta(days=1)
        raise CronError(
            f"cron {self.text!r} has no tick within {_MAX_DAYS} days"
        )  # pragma: no cover


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("cron search needs an aware datetime")
    return moment.astimezone(UTC)


def _day_start(zone: ZoneInfo, day: date) -> datetime:
    """The UTC instant of ``day``'s first local minute (a lower bound of its ticks)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC) - timedelta(hours=3)


def _resolve(expr: CronExpr, wall: datetime) -> list[datetime]:
    """The UTC instants a naive local wall time runs at, by the DST rules above."""
    a = wall.replace(tzinfo=expr.zone, fold=0).astimezone(UTC)
    b = wall.replace(tzinfo=expr.zone, fold=1).astimezone(UTC)
    if a == b:
        return [a]
    if a.astimezone(expr.zone).replace(tzinfo=None) != wall:
        # In the gap: the wall time never shows; run at the first instant after the gap.
        return [_gap_end(expr.zone, min(a, b), max(a, b))]
    return [a, b] if expr.every_hour else [a]


def _gap_end(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first UTC second in ``(low, high]`` whose local offset is the post-gap one."""
    target = high.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


@lru_cache(maxsize=4096)
def _day_instants(expr: CronExpr, day: date) -> tuple[datetime, ...]:
    zone = expr.zone
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), start.time(), tzinfo=zone)
    if start.utcoffset() == end.utcoffset():
        base = start.astimezone(UTC)
        return tuple(base + timedelta(hours=h, minutes=m) for h in expr.hours for m in expr.minutes)
    instants: set[datetime] = set()
    for h in expr.hours:
        for m in expr.minutes:
            wall = datetime(day.year, day.month, day.day, h, m)  # noqa: DTZ001 - a local wall time
            instants.update(_resolve(expr, wall))
    return tuple(sorted(instants))
