"""Per-arm outcome counters on the request path: a lock, a few integer adds, one log2.

``drain()`` hands the counts gathered since the last drain to whoever ships them (the
guard's flusher), as ``ArmWindow`` values; the request path never does I/O.
"""

from __future__ import annotations

import math
import threading

from safeship.rollouts._monitor import ArmWindow

__all__ = ["ARMS", "OutcomeRecorder"]

ARMS = ("control", "candidate")
_SMALLEST = 1e-6
_PER_DOUBLING = 8


class _Arm:
    __slots__ = ("errors", "exceedances", "histogram", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.exceedances = 0
        self.histogram: dict[int, int] = {}


class OutcomeRecorder:
    """Counts requests, errors, exceedances and latency buckets per arm, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arms = {"control": _Arm(), "candidate": _Arm()}
        #: Latencies in buckets above this count as exceedances; set by the guard from the
        #: fleet's control arm (None until there is enough control data).
        self.threshold_bucket: int | None = None

    def record(self, arm: str, *, error: bool, seconds: float) -> None:
        bucket = (
            1 + int(math.log2(seconds / _SMALLEST) * _PER_DOUBLING) if seconds > _SMALLEST else 0
        )
        threshold = self.threshold_bucket
        with self._lock:
            counts = self._arms[arm]
            counts.requests += 1
            if error:
                counts.errors += 1
            if threshold is not None and bucket > threshold:
                counts.exceedances += 1
            hist = counts.histogram
            hist[bucket] = hist.get(bucket, 0) + 1

    def drain(self) -> tuple[ArmWindow, ArmWindow] | None:
        """(control, candidate) since the last drain, or None when nothing was recorded."""
        with self._lock:
            arms = self._arms
            if arms["control"].requests == 0 and arms["candidate"].requests == 0:
                return None
            self._arms = {"control": _Arm(), "candidate": _Arm()}
        control, candidate = (
            ArmWindow(
                requests=a.requests,
                errors=a.errors,
                exceedances=a.exceedances,
                histogram=a.histogram,
            )
            for a in (arms["control"], arms["candidate"])
        )
        return control, candidate
