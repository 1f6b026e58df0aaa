"""The breaker board: every process's breakers, visible and steerable from the control plane.

A ``BreakerReporter`` runs in each app process once started (``reporter.start()``, or
``with BreakerReporter(...) as reporter:``; the constructor does no I/O and starts no
thread). Every ``interval`` seconds, off the hot path, it writes a snapshot of each
registered breaker to ``safeship_breakers`` and reads the manual modes operators set in
``safeship_breaker_overrides`` (force open, disabled, metrics only, or reset back to
automatic), applying each new one once. The control plane
reads and writes those tables through ``BreakerBoard``; every write is audited.

A database outage only pauses reporting: breakers keep deciding from their own state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from safeship.db._audit import record_audit
from safeship.db._schema import breaker_overrides, breakers
from safeship.resilience._default_registry import all_breakers

logger = logging.getLogger("safeship.resilience")

Mode = Literal["forced_open", "disabled", "metrics_only", "automatic"]
MODES: tuple[Mode, ...] = ("forced_open", "disabled", "metrics_only", "automatic")
STALE_AFTER = timedelta(seconds=60)


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ReportedBreaker:
    """One breaker in one process, as last reported."""

    service: str
    instance: str
    name: str
    state: str
    snapshot: dict[str, Any]
    reported_at: datetime
    mode: Mode

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "service": self.service,
            "instance": self.instance,
            "name": self.name,
            "state": self.state,
            "mode": self.mode,
            "snapshot": self.snapshot,
            "reported_at": self.reported_at.isoformat(),
            "stale": now - self.reported_at > STALE_AFTER,
        }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BreakerBoard:
    """Reads reported breakers and sets manual modes (audited) for the control plane."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def all(self) -> list[ReportedBreaker]:
        query = (
            sa.select(breakers, breaker_overrides.c.mode)
            .select_from(
                breakers.outerjoin(
                    breaker_overrides,
                    sa.and_(
                        breaker_overrides.c.service == breakers.c.service,
                        breaker_overrides.c.name == breakers.c.name,
                    ),
                )
            )
            .order_by(breakers.c.service, breakers.c.name, breakers.c.instance)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            ReportedBreaker(
                service=r["service"],
                instance=r["instance"],
                name=r["name"],
                state=r["state"],
                snapshot=dict(r["snapshot"]),
                reported_at=_aware(r["reported_at"]),
                mode=r["mode"] or "automatic",
            )
            for r in rows
        ]

    def set_mode(
        self, service: str, name: str, mode: Mode, *, actor: str, reason: str | None = None
    ) -> int:
        """Ask every process of ``service`` to put breaker ``name`` in ``mode``; audited."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            key = (breaker_overrides.c.service == service) & (breaker_overrides.c.name == name)
            current = conn.execute(sa.select(breaker_overrides).where(key)).mappings().first()
            version = 1 if current is None else int(current["version"]) + 1
            values = {"mode": mode, "version": version, "updated_at": now, "updated_by": actor}
            if current is None:
                conn.execute(
                    sa.insert(breaker_overrides).values(service=service, name=name, **values)
                )
            else:
                conn.execute(sa.update(breaker_overrides).where(key).values(**values))
            record_audit(
                conn,
                actor=actor,
                action=f"breaker.{mode}",
                target=f"breaker:{service}/{name}",
                before={"mode": current["mode"] if current else "automatic"},
                after={"mode": mode},
                reason=reason,
                at=now,
            )
        return version

    def forget_stale(self, *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove reports of processes that stopped reporting long ago."""
        cutoff = datetime.now(UTC) - older_than
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(breakers).where(breakers.c.reported_at < cutoff)).rowcount


class BreakerReporter:
    """Reports this process's breakers and applies operators' modes, in a daemon thread.

    Nothing runs until :meth:`start` (or ``with``/``async with``); :meth:`close` stops it.
    ``start=True`` (the old way of starting in the constructor) still works but is
    deprecated; ``start=False`` is what the constructor does anyway.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        service: str,
        instance: str | None = None,
        interval: float = 2.0,
        start: bool = False,
    ) -> None:
        if not service or len(service) > 100:
            raise ValueError("service: a name of 1-100 characters, e.g. 'orders'")
        if not 0.05 <= interval <= 3600:
            raise ValueError("interval: seconds between 0.05 and 3600")
        self.engine = engine
        self.service = service
        self.instance = instance or default_instance()
        self.interval = interval
        self._applied: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        if start:
            warnings.warn(
                "BreakerReporter(start=True) is deprecated: the constructor no longer starts "
                "the reporter; call reporter.start() or use `with BreakerReporter(...)`",
                DeprecationWarning,
                stacklevel=2,
            )
            self.start()

    def start(self) -> None:
        """Start the reporting thread; calling it again while it runs does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safeship-breakers", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reporting thread and wait for it (at most one interval and 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)

    @property
    def running(self) -> bool:
        """True while the reporting thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BreakerReporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BreakerReporter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)  # joining the thread must not block the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            self.report_once()
            self._stop.wait(self.interval)

    def report_once(self) -> None:
        """Apply new modes, then write snapshots; a database error only pauses reporting."""
        try:
            self._apply_overrides()
            self._write_snapshots()
        except sa.exc.SQLAlchemyError as exc:
            if self.last_error is None:
                logger.warning("breakers.report_failed", extra={"error": type(exc).__name__})
            self.last_error = type(exc).__name__
        else:
            self.last_error = None

    def _apply_overrides(self) -> None:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(breaker_overrides).where(breaker_overrides.c.service == self.service)
                )
                .mappings()
                .all()
            )
        live = {b.name: b for b in all_breakers()}
        for row in rows:
            breaker = live.get(row["name"])
            version = int(row["version"])
            if breaker is None or self._applied.get(row["name"]) == version:
                continue
            reason = f"control plane ({row['updated_by']})"
            mode = row["mode"]
            if mode == "forced_open":
                breaker.force_open(reason=reason)
            elif mode == "disabled":
                breaker.disable(reason=reason)
            elif mode == "metrics_only":
                breaker.metrics_only(reason=reason)
            else:
                breaker.reset(reason=reason)
            self._applied[row["name"]] = version
            logger.info("breakers.mode_applied", extra={"breaker": row["name"], "mode": mode})

    def _write_snapshots(self) -> None:
        now = datetime.now(UTC)
        snapshots = [b.snapshot() for b in all_breakers()]
        if not snapshots:
            return
        with self.engine.begin() as conn:
            for snap in snapshots:
                key = (
                    (breakers.c.service == self.service)
                    & (breakers.c.instance == self.instance)
                    & (breakers.c.name == snap["name"])
                )
                values = {"state": str(snap["state"]), "snapshot": dict(snap), "reported_at": now}
                updated = conn.execute(sa.update(breakers).where(key).values(**values)).rowcount
                if not updated:
                    conn.execute(
                        sa.insert(breakers).values(
                            service=self.service,
                            instance=self.instance,
                            name=snap["name"],
                            **values,
                        )
                    )
