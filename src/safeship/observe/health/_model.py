"""Value objects of the health registry: check definitions, results and the report."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

HEALTH_MEDIA_TYPE = "application/health+json"

Status = Literal["pass", "warn", "fail"]
Kind = Literal["liveness", "readiness", "startup"]
KINDS: frozenset[str] = frozenset({"liveness", "readiness", "startup"})
_STATUSES: frozenset[str] = frozenset({"pass", "warn", "fail"})

CheckFn = Callable[[], Any] | Callable[[], Awaitable[Any]]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The outcome of one component check, as shown in the health report."""

    status: Status
    output: str | None = None
    observed_value: Any = None
    observed_unit: str | None = None
    component_type: str | None = None
    time: datetime = field(default_factory=_now)
    duration_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(
                f"CheckResult.status must be one of {sorted(_STATUSES)}, got {self.status!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the check object of the `application/health+json` format."""
        out: dict[str, Any] = {
            "status": self.status,
            "time": self.time.isoformat().replace("+00:00", "Z"),
        }
        if self.component_type is not None:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            out["observedUnit"] = self.observed_unit
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One registered component check.

    ``fn`` may be sync or async. Returning ``None`` or a string means pass (the string
    becomes the observed value); raising means fail; a returned `CheckResult` is used as is.
    Sync functions run in a worker thread so they never block the event loop.
    """

    name: str
    fn: CheckFn
    timeout: float = 2.0
    cache_ttl: float = 5.0
    kinds: frozenset[str] = frozenset({"readiness"})
    critical: bool = True
    component_type: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("Check.name must be a non-empty string")
        if not callable(self.fn):
            raise TypeError(f"Check {self.name!r}: fn must be callable, got {self.fn!r}")
        if not (isinstance(self.timeout, int | float) and 0 < self.timeout < math.inf):
            raise ValueError(f"Check {self.name!r}: timeout must be > 0 seconds")
        if not (isinstance(self.cache_ttl, int | float) and 0 <= self.cache_ttl < math.inf):
            raise ValueError(f"Check {self.name!r}: cache_ttl must be >= 0 seconds")
        kinds = frozenset(self.kinds)
        if not kinds or not kinds <= KINDS:
            raise ValueError(
                f"Check {self.name!r}: kinds must be a non-empty subset of {sorted(KINDS)}, "
                f"got {sorted(kinds)}"
            )
        object.__setattr__(self, "kinds", kinds)


def _worst(statuses: list[Status]) -> Status:
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses:
        return "warn"
    return "pass"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """The aggregated result of one probe (liveness, readiness or startup)."""

    kind: str
    status: Status
    checks: Mapping[str, CheckResult] = field(default_factory=dict)
    output: str | None = None
    service_id: str | None = None
    version: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", MappingProxyType(dict(self.checks)))

    @property
    def http_status(self) -> int:
        """200 for pass and warn (degraded but serving), 503 for fail."""
        return 503 if self.status == "fail" else 200

    def to_dict(self) -> dict[str, Any]:
        """Return the body in the `application/health+json` shape."""
        body: dict[str, Any] = {"status": self.status}
        for key, value in (
            ("serviceId", self.service_id),
            ("version", self.version),
            ("description", self.description),
            ("output", self.output),
        ):
            if value is not None:
                body[key] = value
        body["checks"] = {name: [result.to_dict()] for name, result in self.checks.items()}
        return body

    @staticmethod
    def aggregate(results: Mapping[str, tuple[CheckResult, bool]]) -> Status:
        """Combine results: a critical failure fails, a non-critical one only warns."""
        statuses: list[Status] = []
        for result, critical in results.values():
            if result.status == "fail" and not critical:
                statuses.append("warn")
            else:
                statuses.append(result.status)
        return _worst(statuses)
