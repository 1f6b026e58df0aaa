"""Timestamps on the dashboard: ``<time datetime="ISO">`` with a readable UTC text.

The page's small script (``static/time.js``) rewrites each element's text in the viewer's
time zone; without JavaScript the UTC text stays, never an epoch number.
"""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape


def as_datetime(value: object) -> datetime | None:
    """A timezone-aware datetime from a datetime, an ISO 8601 string or Unix seconds."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(value: object, empty: str = "never") -> Markup:
    """``<time datetime="2026-12-02T05:00:00+00:00">2026-12-02 05:00:00 UTC</time>``."""
    moment = as_datetime(value)
    if moment is None:
        return escape(empty if value in (None, "") else str(value))
    utc = moment.astimezone(UTC)
    iso = utc.isoformat(timespec="seconds")
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}">{}</time>').format(iso, text)
