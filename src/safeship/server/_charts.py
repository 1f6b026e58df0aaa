"""Line charts as data for the dashboard's SVG templates: scaled points, y-axis ticks
and time ticks (pure; the template draws, ``time.js`` shows the ticks in the viewer's zone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH, HEIGHT = 600, 160
#: Room for the y labels (left) and the time labels (bottom), in SVG units.
LEFT, BOTTOM, TOP, RIGHT = 44, 22, 8, 8


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    css: str
    """The CSS class that colours the line (``pending``, ``dead``, ``control`` ...)."""
    points: Sequence[tuple[datetime, float]]


def nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (1 for none)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _label(value: float) -> str:
    return f"{value:g}"


def line_chart(
    lines: Sequence[Line],
    *,
    start: datetime,
    end: datetime,
    unit: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
    ticks: int = 4,
) -> dict[str, Any]:
    """Everything the ``chart`` macro needs: axes, ticks and each line's polyline points.

    x runs from ``start`` to ``end``; y from 0 to a round number above the highest value.
    Ticks carry ISO times, so the page can show them in the viewer's zone.
    """
    if end <= start:
        raise ValueError("a chart needs end after start")
    span = (end - start).total_seconds()
    values = [v for line in lines for _, v in line.points if math.isfinite(v)]
    top = nice_top(max(values, default=0.0))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def x(at: datetime) -> float:
        frac = min(max((at - start).total_seconds() / span, 0.0), 1.0)
        return round(LEFT + frac * plot_w, 1)

    def y(value: float) -> float:
        return round(TOP + plot_h - min(max(value, 0.0), top) / top * plot_h, 1)

    drawn = [
        {
            "label": line.label,
            "css": line.css,
            "count": len(line.points),
            "points": " ".join(f"{x(at)},{y(v)}" for at, v in line.points if math.isfinite(v)),
        }
        for line in lines
    ]
    x_ticks = [start + (end - start) * (i / ticks) for i in range(ticks + 1)]
    return {
        "width": width,
        "height": height,
        "left": LEFT,
        "right": width - RIGHT,
        "top": TOP,
        "bottom": height - BOTTOM,
        "unit": unit,
        "lines": drawn,
        "empty": not values,
        "y_ticks": [{"y": y(top * f), "label": _label(top * f)} for f in (0.0, 0.5, 1.0)],
        "x_ticks": [
            {"x": x(at), "iso": at.isoformat(), "utc": at.strftime("%H:%M UTC")} for at in x_ticks
        ],
    }
