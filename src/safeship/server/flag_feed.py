"""The flag snapshot the control plane serves to other SDKs (Unleash, OFREP, frontend).

One `FlagClient` (no evaluation counting) keeps a compiled snapshot of the store fresh
through the same change feed the user's processes use: PostgreSQL ``LISTEN``, Redis
pub/sub or polling the version number every ``poll_interval`` seconds. Each new version
becomes a `ServedSnapshot`: the compiled `FlagSet`, the Unleash state and the serialized
``/api/client/features`` bodies (one per filter, made once), so the hot endpoints read
memory only, never the database.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from safeship.errors import SafeshipError
from safeship.flags._flagset import FlagSet
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore

#: Distinct ``(project, namePrefix)`` filters whose bodies one snapshot keeps.
MAX_CACHED_QUERIES = 64


@dataclass(frozen=True, slots=True)
class FeatureQuery:
    """The filters of ``GET /api/client/features``: projects (any of) and a name prefix."""

    projects: tuple[str, ...] = ()
    name_prefix: str | None = None

    def digest(self) -> str:
        raw = json.dumps([sorted(self.projects), self.name_prefix], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:8]

    def admits(self, feature: dict[str, Any]) -> bool:
        if self.projects and feature.get("project", "default") not in self.projects:
            return False
        return self.name_prefix is None or str(feature.get("name", "")).startswith(self.name_prefix)


@dataclass(frozen=True, slots=True)
class FeaturesBody:
    """A serialized features answer and its ETag."""

    etag: str
    body: bytes


def client_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """A stored definition as Unleash's client API serves it (defaults filled in)."""
    served: dict[str, Any] = {
        "name": feature.get("name"),
        "type": feature.get("type", "release"),
        "description": feature.get("description"),
        "project": feature.get("project", "default"),
        "enabled": bool(feature.get("enabled", False)),
        "stale": bool(feature.get("stale", False)),
        "impressionData": bool(feature.get("impressionData", False)),
        "strategies": feature.get("strategies") or [],
        "variants": feature.get("variants") or [],
    }
    if feature.get("dependencies"):
        served["dependencies"] = feature["dependencies"]
    return served


@dataclass(slots=True)
class ServedSnapshot:
    """One store version as served: compiled flags, client features and cached bodies."""

    version: int
    flags: FlagSet
    features: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    _bodies: OrderedDict[FeatureQuery, FeaturesBody] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, version: int, flags: FlagSet) -> ServedSnapshot:
        state = flags.to_unleash()
        features = [client_feature(f) for f in state.get("features") or [] if isinstance(f, dict)]
        segments = [s for s in state.get("segments") or [] if isinstance(s, dict)]
        return cls(version, flags, features, segments)

    def etag(self, query: FeatureQuery) -> str:
        """Unleash's shape: ``"<query hash>:<revision>"``."""
        return f'"{query.digest()}:{self.version}"'

    def features_body(self, query: FeatureQuery) -> FeaturesBody:
        """The serialized answer for ``query``, made once per snapshot (bounded LRU)."""
        with self._lock:
            cached = self._bodies.get(query)
            if cached is not None:
                self._bodies.move_to_end(query)
                return cached
        etag = self.etag(query)
        document = {
            "version": 2,
            "features": [f for f in self.features if query.admits(f)],
            "segments": self.segments,
            "query": {
                "project": list(query.projects) or ["default"],
                "namePrefix": query.name_prefix,
                "inlineSegmentConstraints": False,
            },
            "meta": {"revisionId": self.version, "etag": etag, "queryHash": query.digest()},
        }
        made = FeaturesBody(etag, json.dumps(document, separators=(",", ":")).encode())
        with self._lock:
            self._bodies[query] = made
            while len(self._bodies) > MAX_CACHED_QUERIES:
                self._bodies.popitem(last=False)
        return made


class FeedUnavailableError(SafeshipError):
    """No snapshot could be loaded yet (the store is unreachable or its state unusable)."""


class FlagFeed:
    """Keeps the served snapshot current; started on first use, closed with the app."""

    def __init__(
        self, store: FlagStore, *, poll_interval: float = 1.0, redis_url: str | None = None
    ) -> None:
        self.store = store
        self._client = FlagClient(
            store=store, poll_interval=poll_interval, redis_url=redis_url, count_evaluations=False
        )
        self._client.add_listener(self._installed)
        self._current: ServedSnapshot | None = None
        self._lock = threading.Lock()

    def _installed(self, version: int) -> None:
        self._current = ServedSnapshot.of(version, self._client.flags)

    @property
    def ready(self) -> bool:
        """Whether a snapshot is loaded (`snapshot` then never blocks)."""
        return self._current is not None

    def snapshot(self) -> ServedSnapshot:
        """The newest snapshot; the first call loads it (blocks once, off the event loop).

        Raises `FeedUnavailableError` while none could be loaded: an empty answer would
        tell every SDK that no flag exists and turn them all off."""
        current = self._current
        if current is not None:
            return current
        with self._lock:
            if self._current is None:
                self._client.start()
                if self._current is None:
                    raise FeedUnavailableError(self._client.last_error or "no flag snapshot yet")
            return self._current

    def close(self) -> None:
        self._client.close()
