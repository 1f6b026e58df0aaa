"""Optional external metric source: the guard's windows read from Prometheus.

Teams that already have fleet metrics can feed the guard from Prometheus instead of (not as
well as) per-process recorders.  For each rollout the caller gives three PromQL templates
that return raw counter *totals* (not ``rate``/``increase``): requests, errors and requests
slower than a latency threshold (usually ``_count - _bucket{le="…"}`` of a histogram).
``{arm}`` in a template is replaced by the arm's label value and ``{threshold}`` by the
bucket ``le``.  The source differences each series' total against the previous read itself,
so nothing is lost or counted twice between reads, whatever the interval; a series whose
total went down was reset (process restart) and counts its new total, as ``increase()``
does.  The first read of a rollout only sets the baseline.

Run exactly one ``PrometheusAgent`` per rollout (Prometheus already sums the fleet: two
agents would count every request twice).  Sync only for now; the agent runs on a thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from safeship.errors import SafeshipError
from safeship.rollouts._guard import Decision, RolloutGuard
from safeship.rollouts._monitor import ArmWindow

__all__ = [
    "PrometheusAgent",
    "PrometheusError",
    "PrometheusQueries",
    "PrometheusReading",
    "PrometheusSource",
]

logger = logging.getLogger("safeship.rollouts")

ARMS = ("control", "candidate")
METRICS = ("requests", "errors", "slow")

# (arm, metric) -> series labels -> last total seen
_Totals = dict[tuple[str, str], dict[str, float]]


class PrometheusError(SafeshipError, RuntimeError):
    """Prometheus was unreachable, rejected a query, or answered something unusable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusQueries:
    """One rollout's PromQL templates; each must return counter totals, per series.

    ``requests``, ``errors`` and ``slow`` contain ``{arm}``, replaced by ``control_arm`` or
    ``candidate_arm``; ``slow`` may contain ``{threshold}``, replaced by ``threshold``
    formatted as Prometheus writes ``le`` labels (``0.25``, ``1``, ``+Inf``).  Without
    ``slow`` the latency test sees no exceedances (errors only).  Example::

        PrometheusQueries(
            requests='sum by (instance) (http_requests_total{route="/orders",arm="{arm}"})',
            errors='sum by (instance) (http_requests_total{route="/orders",arm="{arm}",'
                   'code=~"5.."})',
            slow='sum by (instance) (http_request_seconds_count{arm="{arm}"})'
                 ' - sum by (instance) (http_request_seconds_bucket{arm="{arm}",'
                 'le="{threshold}"})',
            threshold=0.25,
        )
    """

    requests: str
    errors: str
    slow: str | None = None
    threshold: float | str | None = None
    control_arm: str = "control"
    candidate_arm: str = "candidate"

    def __post_init__(self) -> None:
        for label, template in (("requests", self.requests), ("errors", self.errors),
                                ("slow", self.slow)):  # fmt: skip
            if template is None:
                continue
            if not isinstance(template, str) or not template.strip():
                raise ValueError(f"{label}: a PromQL expression, got {template!r}")
            if "{arm}" not in template:
                raise ValueError(f"{label}: the query must contain {{arm}}, got {template!r}")
        t = self.threshold
        if isinstance(t, str):
            if not t or '"' in t or "\\" in t:
                raise ValueError(f"threshold: an le label value, got {t!r}")
        elif t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or t <= 0):
            raise ValueError(f"threshold: seconds > 0 (a bucket le), got {t!r}")
        if self.slow is not None and "{threshold}" in self.slow and self.threshold is None:
            raise ValueError("slow uses {threshold}: give threshold= (the bucket le)")
        if self.threshold is not None and self.slow is None:
            raise ValueError("threshold= needs a slow= query to use it")
        for label, value in (("control_arm", self.control_arm),
                             ("candidate_arm", self.candidate_arm)):  # fmt: skip
            if not isinstance(value, str) or not value or '"' in value or "\\" in value:
                raise ValueError(f"{label}: a non-empty label value, got {value!r}")
        if self.control_arm == self.candidate_arm:
            raise ValueError("control_arm and candidate_arm must differ")

    def query(self, arm: str, metric: str) -> str | None:
        """The PromQL to run for ``arm`` (control or candidate) and ``metric``."""
        template: str | None = getattr(self, metric)
        if template is None:
            return None
        value = self.control_arm if arm == "control" else self.candidate_arm
        text = template.replace("{arm}", value)
        if self.threshold is not None:
            le = self.threshold if isinstance(self.threshold, str) else _le(self.threshold)
            text = text.replace("{threshold}", le)
        return text


def _le(seconds: float) -> str:
    """An ``le`` label as prometheus-client (Python) writes it (``0.25``, ``1.0``, ``+Inf``)."""
    if math.isinf(seconds):
        return "+Inf"
    return repr(float(seconds))


@dataclass(slots=True)
class PrometheusReading:
    """One rollout's windows since the previous read; ``commit()`` makes them the new
    baseline (call it only once they are safely stored)."""

    name: str
    control: ArmWindow
    candidate: ArmWindow
    _commit: Callable[[], None] = field(repr=False)

    def commit(self) -> None:
        self._commit()


class PrometheusSource:
    """Reads per-arm request, error and slow-request counts for rollouts from Prometheus."""

    def __init__(
        self,
        *,
        url: str,
        queries: Mapping[str, PrometheusQueries],
        timeout: float = 2.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: Prometheus base URL like http://127.0.0.1:9090, got {url!r}")
        if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ValueError(f"timeout: seconds between 0 and 60, got {timeout!r}")
        if not queries:
            raise ValueError("queries: give at least one rollout's PrometheusQueries")
        for name, q in queries.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"queries: rollout names must be non-empty, got {name!r}")
            if not isinstance(q, PrometheusQueries):
                raise TypeError(f"queries[{name!r}]: a PrometheusQueries, got {q!r}")
        self.url = url.rstrip("/")
        self.queries = dict(queries)
        self.timeout = float(timeout)
        self._own_client = client is None
        self._client = client or httpx.Client(base_url=self.url, timeout=self.timeout)
        self._clock = clock
        self._totals: dict[str, _Totals] = {}
        self._lock = threading.Lock()

    def instant(self, query: str, *, at: float | None = None) -> dict[str, float]:
        """Run an instant query; its series (by label set) and values.  Raises
        ``PrometheusError`` for anything but a vector or scalar answer."""
        params: dict[str, str] = {"query": query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            response = self._client.get(
                f"{self.url}/api/v1/query", params=params, timeout=self.timeout
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"HTTP {response.status_code}: {detail or 'bad answer'}")
        data = body.get("data") or {}
        kind = data.get("resultType") if isinstance(data, dict) else None
        result: Any = data.get("result") if isinstance(data, dict) else None
        try:
            if kind == "scalar":
                return {"": float(result[1])}
            if kind == "vector":
                return {
                    _series_key(item.get("metric") or {}): float(item["value"][1])
                    for item in result
                }
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
            raise PrometheusError(f"malformed {kind} answer: {exc}") from exc
        raise PrometheusError(f"expected a vector or scalar, got {kind!r} for {query!r}")

    def prepare(self, name: str) -> PrometheusReading | None:
        """The windows since the last committed read of ``name``, without committing them.
        None on the first read (it sets the baseline) and when no arm moved.  Raises
        ``PrometheusError`` (nothing changes) when Prometheus fails or has no data."""
        queries = self.queries[name]
        at = self._clock()
        totals: _Totals = {}
        for arm in ARMS:
            for metric in METRICS:
                query = queries.query(arm, metric)
                if query is not None:
                    totals[(arm, metric)] = self.instant(query, at=at)
        if not totals[("control", "requests")] and not totals[("candidate", "requests")]:
            raise PrometheusError(f"no data for the requests queries of {name!r}")
        with self._lock:
            previous = self._totals.get(name)
        if previous is None:
            with self._lock:
                self._totals[name] = totals
            return None
        deltas = {key: _increase(previous.get(key, {}), now) for key, now in totals.items()}
        merged = {key: {**previous.get(key, {}), **now} for key, now in totals.items()}

        def commit() -> None:
            with self._lock:
                self._totals[name] = merged

        windows = {}
        for arm in ARMS:
            requests = round(deltas[(arm, "requests")])
            errors = min(requests, round(deltas[(arm, "errors")]))
            slow = min(requests, round(deltas.get((arm, "slow"), 0.0)))
            windows[arm] = ArmWindow(requests=requests, errors=errors, exceedances=slow)
        if not any(w.requests or w.errors or w.exceedances for w in windows.values()):
            commit()  # nothing moved, but new series and resets still update the baseline
            return None
        return PrometheusReading(name, windows["control"], windows["candidate"], commit)

    def read(self, name: str) -> tuple[ArmWindow, ArmWindow] | None:
        """``(control, candidate)`` since the last read of ``name``, or None (first read,
        nothing new).  Raises ``PrometheusError`` when Prometheus fails."""
        reading = self.prepare(name)
        if reading is None:
            return None
        reading.commit()
        return reading.control, reading.candidate

    def close(self) -> None:
        if self._own_client:
            self._client.close()


def _series_key(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _increase(before: Mapping[str, float], now: Mapping[str, float]) -> float:
    """How much the series' totals grew; a series that went down was reset and counts its
    new total; a series seen for the first time counts whole (it started since the last
    read).  Series missing now (a failed scrape) keep their last total for next time."""
    total = 0.0
    for key, value in now.items():
        if math.isnan(value):
            continue
        last = before.get(key)
        total += value if last is None or value < last else value - last
    return max(total, 0.0)


class PrometheusAgent:
    """Records the Prometheus source's windows into the guard (as process "prometheus")
    and evaluates each rollout.  A Prometheus failure is logged once per outage and skips
    that rollout's window for this tick; the counts are picked up by the next good read."""

    def __init__(
        self,
        guard: RolloutGuard,
        source: PrometheusSource,
        names: Iterable[str] | None = None,
        *,
        interval: float = 15.0,
        process: str = "prometheus",
        evaluate: bool = True,
    ) -> None:
        if not isinstance(interval, int | float) or not 0.05 <= interval <= 3600:
            raise ValueError(f"interval: seconds between 0.05 and 3600, got {interval!r}")
        self.names = list(source.queries if names is None else names)
        unknown = [n for n in self.names if n not in source.queries]
        if unknown:
            raise ValueError(f"names without PrometheusQueries in the source: {unknown}")
        self.guard = guard
        self.source = source
        self.interval = float(interval)
        self.process = process
        self.evaluate = evaluate
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[Decision]:
        """Read, record and evaluate every rollout once; return the decisions applied."""
        decisions: list[Decision] = []
        for name in self.names:
            try:
                reading = self.source.prepare(name)
            except Exception as exc:  # noqa: BLE001 - unreadable now (logged once); others go on
                if name not in self._failing:
                    self._failing.add(name)
                    logger.warning(
                        "rollout.prometheus_read_failed",
                        extra={"rollout": name, "error": f"{type(exc).__name__}: {exc}"},
                    )
                reading = None
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    logger.info("rollout.prometheus_read_recovered", extra={"rollout": name})
            try:
                if reading is not None:
                    self.guard.record_window(
                        name, process=self.process,
                        control=reading.control, candidate=reading.candidate,
                    )  # fmt: skip
                    reading.commit()
                if self.evaluate:
                    decision = self.guard.evaluate(name)
                    if decision is not None:
                        decisions.append(decision)
            except Exception:
                logger.exception("rollout.prometheus_record_failed", extra={"rollout": name})
        return decisions

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="safeship-guard-prometheus", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                logger.exception("rollout.prometheus_tick_failed")

    def close(self) -> None:
        """Stop the thread (no final read: a partial interval is picked up next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
