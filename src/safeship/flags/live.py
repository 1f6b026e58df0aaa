"""The live flag client that runs in the user's processes.

Evaluation reads the current compiled snapshot: no lock, no I/O.  A background thread
keeps the snapshot fresh: it waits for a push (PostgreSQL ``LISTEN safeship_flags`` or a
Redis channel) and falls back to polling the store's version number, so a lost
notification costs at most one poll interval.  A new snapshot is compiled off the hot path
and swapped in with one attribute assignment.

When the store cannot be reached the client keeps serving the last good snapshot and
reports itself degraded. When the stored state cannot be compiled (written around the
store's checks), it keeps serving the last good snapshot too (safe defaults if it never had
one), reports itself unhealthy, logs once per bad version, and installs the next version
that compiles by itself. No exception ends the refresher thread. The client can boot
from a backup file written after every successful
refresh.  It never turns an evaluation into a network request.  After ``fork()`` (gunicorn
``--preload``, multiprocessing) the child starts its own refresher and refreshes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from safeship.flags import _authoring as authoring
from safeship.flags._counter import EvaluationCounter
from safeship.flags._flagset import FlagSet
from safeship.flags._overrides import FlagOverride, flag_key
from safeship.flags.store import NOTIFY_CHANNEL, FlagStore

logger = logging.getLogger("safeship.flags")
REDIS_CHANNEL = "safeship:flags"


@dataclass(frozen=True, slots=True)
class Impression:
    """One evaluation of a flag whose definition asks for impression data."""

    flag: str
    kind: str  # "is_enabled" or "variant"
    enabled: bool
    variant: str | None
    context: Any


class _Evaluator(Protocol):
    """What the client's evaluation calls: a ``FlagSet`` or a wrapper around one."""

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool: ...
    def variant(self, name: str, context: Any = None) -> Any: ...


class _ReportingImpressions:
    """A snapshot's evaluation that reports impressions for flags with ``impressionData``.

    Other flags cost one membership test more; a failing hook is logged, never raised.
    """

    def __init__(self, flags: FlagSet, hook: Callable[[Impression], None]) -> None:
        self._flags = flags
        self._hook = hook
        self._wanted = frozenset(n for n in flags.names() if flags.feature(n).get("impressionData"))

    def _emit(self, impression: Impression) -> None:
        try:
            self._hook(impression)
        except Exception:
            logger.exception("flags.impression_hook_failed")

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        result = self._flags.is_enabled(name, context, default)
        if name in self._wanted:
            self._emit(Impression(name, "is_enabled", result, None, context))
        return result

    def variant(self, name: str, context: Any = None) -> Any:
        result = self._flags.variant(name, context)
        if name in self._wanted:
            self._emit(Impression(name, "variant", result.feature_enabled, result.name, context))
        return result


class _NotStarted:
    """The evaluation of a client never started: it serves defaults, and says so once."""

    def __init__(self, flags: FlagSet) -> None:
        self._flags = flags
        self._warned = False

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("flags.client_not_started", extra={"serving": "defaults"})

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        self._warn_once()
        return self._flags.is_enabled(name, context, default)

    def variant(self, name: str, context: Any = None) -> Any:
        self._warn_once()
        return self._flags.variant(name, context)


def apply_overrides(
    state: dict[str, Any], overrides: Mapping[str, FlagOverride]
) -> tuple[dict[str, Any], set[str]]:
    """The state with ``SAFESHIP_FLAG_*`` overrides applied, and the names they touched."""
    if not overrides:
        return state, set()
    features, touched = [], set()
    for feature in state.get("features", []):
        name = feature.get("name") if isinstance(feature, Mapping) else None
        override = overrides.get(flag_key(name)) if isinstance(name, str) else None
        if override is None:
            features.append(feature)
            continue
        touched.add(feature["name"])
        forced = authoring.new_feature(feature["name"], enabled=override.enabled)
        forced["variants"] = feature.get("variants", [])
        if override.percent is not None:
            forced = authoring.rollout(forced, override.percent)
        features.append(forced)
    return {**state, "features": features}, touched


class FlagClient:
    """Evaluates flags from a live snapshot of the store.

    The constructor only validates its settings: no I/O, no thread, nothing registered.
    :meth:`start` loads the first snapshot and starts the refresher; :meth:`close` stops
    it; ``with`` and ``async with`` do both.  Until started it serves every flag's default.

    >>> with FlagClient(store=FlagStore(engine)) as flags:     # doctest: +SKIP
    ...     flags.is_enabled("checkout-v2", {"userId": "42"})
    """

    def __init__(
        self,
        *,
        store: FlagStore,
        poll_interval: float = 5.0,
        push: bool = True,
        redis_url: str | None = None,
        backup_path: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, FlagOverride] | None = None,
        count_evaluations: bool = True,
        usage_interval: float = 60.0,
        impressions: Callable[[Impression], None] | None = None,
        start: bool = False,
    ) -> None:
        if not 0.05 <= poll_interval <= 3600:
            raise ValueError("poll_interval: seconds between 0.05 and 3600")
        self.store = store
        self.poll_interval = poll_interval
        self.push = push
        self.redis_url = redis_url
        self.backup_path = Path(backup_path) if backup_path is not None else None
        self.overrides = dict(overrides or {})
        self.counter = EvaluationCounter() if count_evaluations else None
        self.impressions = impressions
        self.usage_interval = usage_interval
        self._usage_flushed = time.monotonic()
        self.overridden: frozenset[str] = frozenset()
        self.version = -1
        self.ready = False
        self.last_error: str | None = None
        self.last_refresh: float | None = None
        #: Why the store's current state cannot be used (None while it can).
        self.state_error: str | None = None
        self._bad_version: int | None = None
        self.source = "none"
        self._swap(FlagSet.from_unleash({"version": 1, "features": []}, counter=self.counter))
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Set while a push channel (LISTEN or a Redis subscription) is established.
        self.listening = threading.Event()
        self._listeners: list[Callable[[int], None]] = []
        self._thread: threading.Thread | None = None
        self._evaluator: _Evaluator = _NotStarted(self._flags)  # until the first snapshot
        if start:
            warnings.warn(
                "FlagClient(start=True) is deprecated: the constructor no longer starts the "
                "client; call client.start() or use `with FlagClient(...) as flags:`",
                DeprecationWarning,
                stacklevel=2,
            )
            self.start()

    # -- evaluation: one call into the current snapshot's evaluators ---------------------

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        """Whether ``name`` is on for ``context`` in the current snapshot (no I/O)."""
        return self._evaluator.is_enabled(name, context, default)

    def variant(self, name: str, context: Any = None) -> Any:
        """The variant of ``name`` for ``context`` in the current snapshot (no I/O)."""
        return self._evaluator.variant(name, context)

    @property
    def flags(self) -> FlagSet:
        """The snapshot evaluation reads now."""
        return self._flags

    @flags.setter
    def flags(self, snapshot: FlagSet) -> None:
        # Assigning a snapshot (as safeship.flags.testing.force_flags does) rebinds evaluation.
        self._swap(snapshot)

    def _swap(self, flags: FlagSet) -> None:
        """Install ``flags``: evaluation reads it from the next call on (one assignment)."""
        self._flags = flags
        self._evaluator = (
            flags if self.impressions is None else _ReportingImpressions(flags, self.impressions)
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the refresher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Load the first snapshot (store, else backup) and start the refresher thread.

        Blocks for the first load (bounded by the store's connect timeout); calling it again
        while the client runs does nothing.
        """
        if self.running:
            return
        if not self.refresh():
            self._boot_from_backup()
        self._start_thread()
        _register_fork_handler(self)

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safeship-flags", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self.ready:
            with contextlib.suppress(Exception):
                self._flush_usage(force=True)
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.poll_interval + 5)

    def __enter__(self) -> FlagClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FlagClient:
        await asyncio.to_thread(self.start)  # the first load must not block the event loop
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def _after_fork_in_child(self) -> None:
        self.store.engine.dispose(close=False)  # never share the parent's connections
        self._thread = None
        if not self._stop.is_set():
            self._start_thread()
            self._wake.set()

    # -- refreshing --------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Load the store's state if its version moved; False when it could not be used.

        Never raises: an unreachable store degrades the client, a state that cannot be
        compiled makes it unhealthy; either way the last good snapshot stays in use.
        """
        try:
            return self._refresh(force=force)
        except sa.exc.SQLAlchemyError as exc:
            self._degrade(f"store unreachable: {type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - stored data must never stop the client
            self._state_unusable(None, exc)
        return False

    def _refresh(self, *, force: bool) -> bool:
        current = self.store.version()
        if not force and self.ready and current == self.version:
            self._mark_fresh("store")
            self._flush_usage()
            return True
        if not force and current == self._bad_version:
            return False  # the same unusable state: already reported
        try:
            version, state = self.store.state()
            self._install(version, state, source="store")
        except sa.exc.SQLAlchemyError:
            raise
        except Exception as exc:  # noqa: BLE001 - see refresh()
            self._state_unusable(current, exc)
            return False
        self._write_backup(version, state)
        self._flush_usage()
        return True

    def _state_unusable(self, version: int | None, exc: Exception) -> None:
        reason = f"stored flag state cannot be used: {type(exc).__name__}: {exc}"
        if version is None or version != self._bad_version:
            logger.error(
                "flags.state_unusable",
                extra={
                    "version": version,
                    "serving_version": self.version,
                    "error": type(exc).__name__,
                    "detail": str(exc)[:500],
                },
            )
        self._bad_version = version
        self.state_error = reason
        self.last_error = reason

    def _flush_usage(self, *, force: bool = False) -> None:
        """Record which flags were evaluated (for the stale report), at most once a minute."""
        now = time.monotonic()
        if self.counter is None or (not force and now - self._usage_flushed < self.usage_interval):
            return
        self._usage_flushed = now
        used = [name for name, counts in self.counter.drain().items() if counts.total]
        try:
            self.store.mark_evaluated(used)
        except Exception as exc:  # noqa: BLE001 - usage is best effort, never fatal
            self._degrade(f"usage not recorded: {type(exc).__name__}")

    def _install(self, version: int, state: dict[str, Any], *, source: str) -> None:
        effective, touched = apply_overrides(state, self.overrides)
        self._swap(FlagSet.from_unleash(effective, counter=self.counter))
        self.overridden = frozenset(touched)
        changed = version != self.version
        self.version = version
        self.ready = True
        if source == "store":
            if self.state_error is not None:
                logger.info("flags.state_recovered", extra={"version": version})
            self.state_error = None
            self._bad_version = None
        self._mark_fresh(source)
        if changed:
            logger.info("flags.snapshot_installed", extra={"version": version, "source": source})
            for listener in list(self._listeners):
                try:
                    listener(version)
                except Exception:
                    logger.exception("flags.listener_failed")

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` after each new snapshot is installed (refresher thread)."""
        self._listeners.append(listener)

    def _mark_fresh(self, source: str) -> None:
        self.source = source
        self.last_error = None
        self.last_refresh = time.monotonic()

    def _degrade(self, reason: str) -> None:
        if self.last_error != reason:
            logger.warning(
                "flags.degraded", extra={"reason": reason, "serving_version": self.version}
            )
        self.last_error = reason

    def health(self) -> tuple[str, str]:
        """("pass" | "warn" | "fail", detail) for a readiness check.

        ``fail`` before the first snapshot and while the stored state cannot be compiled;
        ``warn`` while the store is unreachable (the last good snapshot is served).
        """
        if self.state_error is not None:
            return "fail", f"{self.state_error}; serving version {self.version} ({self.source})"
        if not self.ready and self._thread is None:
            return "fail", "not started: call start() or use `with FlagClient(...)`"
        if not self.ready:
            return "fail", self.last_error or "no flag snapshot loaded yet"
        if self.last_error:
            return "warn", f"{self.last_error}; serving version {self.version} ({self.source})"
        return "pass", f"version {self.version} from {self.source}"

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                waiter = self._listen_postgres if self._can_listen() else self._listen_redis
                waiter()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the refresher must never die
                self.listening.clear()
                failures += 1
                self._degrade(f"change feed lost: {type(exc).__name__}")
                self._stop.wait(min(self.poll_interval, 0.2 * 2 ** min(failures, 5)))
                self.refresh()  # never raises

    def _can_listen(self) -> bool:
        return self.push and self.store.engine.dialect.name == "postgresql"

    def _listen_postgres(self) -> None:
        """LISTEN on a dedicated connection; refresh on each notify or poll timeout."""
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening.set()
            self.refresh()  # changes made before LISTEN took effect
            while not self._stop.is_set():
                woke = False
                for _ in conn.notifies(timeout=min(self.poll_interval, 1.0), stop_after=1):
                    woke = True
                if woke or self._due() or self._wake.is_set():
                    self._wake.clear()
                    self.refresh()

    def _listen_redis(self) -> None:
        """Redis pub/sub when configured; otherwise poll the version number."""
        if not (self.push and self.redis_url):
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            self.refresh()
            return
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=3)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
        try:
            pubsub.subscribe(REDIS_CHANNEL)
            self.listening.set()
            self.refresh()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=min(self.poll_interval, 1.0))
                if message is not None or self._due() or self._wake.is_set():
                    self._wake.clear()
                    self.refresh()
        finally:
            self.listening.clear()
            pubsub.close()
            client.close()

    def _due(self) -> bool:
        return self.last_refresh is None or (
            time.monotonic() - self.last_refresh >= self.poll_interval
        )

    # -- backup ------------------------------------------------------------------------

    def _write_backup(self, version: int, state: dict[str, Any]) -> None:
        if self.backup_path is None:
            return
        try:
            self.backup_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".flags-", dir=self.backup_path.parent)
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": version, "state": state}, handle)
            os.replace(tmp, self.backup_path)  # atomic: readers see old or new, never half
        except (OSError, TypeError, ValueError) as exc:
            logger.warning("flags.backup_failed", extra={"error": str(exc)})

    def _boot_from_backup(self) -> None:
        if self.backup_path is None or not self.backup_path.exists():
            return
        try:
            saved = json.loads(self.backup_path.read_text())
            self._install(int(saved["version"]), saved["state"], source="backup")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("flags.backup_unreadable", extra={"error": str(exc)})
            return
        self.last_error = self.state_error or "store unreachable at start; booted from backup"


_clients: weakref.WeakSet[FlagClient] = weakref.WeakSet()
_fork_hook_installed = False
_collector_registered = False


class _FlagMetrics:
    """Prometheus collector: evaluation counts of every live client, read at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        results = CounterMetricFamily(
            "safeship_flag_evaluations", "Flag evaluations by result.", labels=["flag", "result"]
        )
        variants = CounterMetricFamily(
            "safeship_flag_variants", "Variant evaluations by name.", labels=["flag", "variant"]
        )
        totals: dict[tuple[str, str], int] = {}
        variant_totals: dict[tuple[str, str], int] = {}
        for client in list(_clients):
            if client.counter is None:
                continue
            for flag, counts in client.counter.totals().items():
                for result, value in (
                    ("on", counts.yes),
                    ("off", counts.no),
                    ("error", counts.errors),
                ):
                    totals[flag, result] = totals.get((flag, result), 0) + value
                for variant, value in counts.variants.items():
                    variant_totals[flag, variant] = variant_totals.get((flag, variant), 0) + value
        for (flag, result), value in sorted(totals.items()):
            results.add_metric([flag, result], value)
        for (flag, variant), value in sorted(variant_totals.items()):
            variants.add_metric([flag, variant], value)
        yield results
        yield variants


def _register_fork_handler(client: FlagClient) -> None:
    global _fork_hook_installed, _collector_registered
    _clients.add(client)
    if not _collector_registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(_FlagMetrics())
        _collector_registered = True
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)
        _fork_hook_installed = True


def _after_fork() -> None:
    for client in list(_clients):
        with contextlib.suppress(Exception):
            client._after_fork_in_child()


def redis_publisher(redis_url: str) -> Callable[[int], None]:
    """A callback for ``FlagStore(publish=...)`` that announces new versions on Redis."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def publish(version: int) -> None:
        try:
            client.publish(REDIS_CHANNEL, str(version))
        except redis.RedisError as exc:  # polling still delivers the change
            logger.warning("flags.publish_failed", extra={"error": type(exc).__name__})

    return publish


def flags_check(client: FlagClient) -> Callable[[], Any]:
    """A readiness check for ``HealthRegistry.add``: fail before the first snapshot and
    while the stored state cannot be used, warn while serving a stale or backup snapshot."""
    from safeship.observe.health import CheckResult

    def check() -> CheckResult:
        status, detail = client.health()
        return CheckResult(status=status, output=detail)  # type: ignore[arg-type]

    return check
