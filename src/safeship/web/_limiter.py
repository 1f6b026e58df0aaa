"""Per-client failure limiting for authentication: slow down, then block.

Every failed attempt from a client counts. Past ``max_per_window`` failures inside a
``window`` the client gets 429 until the window ends; past ``block_after`` failures
inside ``block_for`` it is blocked for ``block_for``. Counts live in memory (one
process) or in Redis (shared by every process of the service, with the process's memory
as the fallback while Redis is out).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from safeship.observe._logging import get_logger
from safeship.observe.health import CheckResult

_log = get_logger("safeship.web.limiter")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitPolicy:
    """Thresholds of the failure limiter (defaults: 5 per minute, 20 → 15 min block)."""

    max_per_window: int = 5
    window: float = 60.0
    block_after: int = 20
    block_for: float = 900.0

    def __post_init__(self) -> None:
        if self.max_per_window < 1 or self.block_after < 1:
            raise ValueError("LimitPolicy: max_per_window and block_after must be >= 1")
        if not (0 < self.window < math.inf and 0 < self.block_for < math.inf):
            raise ValueError("LimitPolicy: window and block_for must be positive seconds")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a client may try now; if not, for how many seconds to wait."""

    allowed: bool
    retry_after: int = 0
    blocked: bool = False


ALLOWED = Verdict(True)


class FailureStore(Protocol):
    """Where failure counts live."""

    async def check(self, client: str) -> Verdict:
        """The current verdict for ``client`` (does not count anything)."""
        ...

    async def record_failure(self, client: str) -> Verdict:
        """Count one failure of ``client`` and return the verdict after it."""
        ...


@dataclass(slots=True)
class _Counts:
    window_start: float
    in_window: int
    long_start: float
    in_long: int
    blocked_until: float = 0.0


class MemoryFailureStore:
    """Failure counts in this process, bounded to ``max_clients`` (least recent evicted)."""

    def __init__(
        self,
        *,
        policy: LimitPolicy | None = None,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_clients < 1:
            raise ValueError("MemoryFailureStore.max_clients must be >= 1")
        self.policy = policy or LimitPolicy()
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Counts] = OrderedDict()

    @property
    def known_clients(self) -> Mapping[str, object]:
        """The clients with failures counted (read only): any other client is allowed."""
        return self._clients

    async def check(self, client: str) -> Verdict:
        """The current verdict for ``client``."""
        return self.check_now(client)

    def check_now(self, client: str) -> Verdict:
        """`check` without awaiting: counts in memory need no I/O."""
        counts = self._clients.get(client)
        return ALLOWED if counts is None else self._verdict(counts, self._clock())

    async def record_failure(self, client: str) -> Verdict:
        """Count one failure."""
        now = self._clock()
        counts = self._fresh(client, now)
        counts.in_window += 1
        counts.in_long += 1
        if counts.in_long >= self.policy.block_after and counts.blocked_until <= now:
            counts.blocked_until = now + self.policy.block_for
        return self._verdict(counts, now)

    def _fresh(self, client: str, now: float) -> _Counts:
        counts = self._clients.pop(client, None)
        if counts is None:
            counts = _Counts(now, 0, now, 0)
        if now - counts.window_start >= self.policy.window:
            counts.window_start, counts.in_window = now, 0
        if now - counts.long_start >= self.policy.block_for and counts.blocked_until <= now:
            counts.long_start, counts.in_long = now, 0
        self._clients[client] = counts
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return counts

    def _verdict(self, counts: _Counts, now: float) -> Verdict:
        if counts.blocked_until > now:
            return Verdict(False, math.ceil(counts.blocked_until - now), blocked=True)
        window_left = counts.window_start + self.policy.window - now
        if counts.in_window >= self.policy.max_per_window and window_left > 0:
            return Verdict(False, max(1, math.ceil(window_left)))
        return ALLOWED


_RECORD_SCRIPT = """
local w = redis.call('INCR', KEYS[1])
if w == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local l = redis.call('INCR', KEYS[2])
if l == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if l >= tonumber(ARGV[3]) and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
end
return {w, redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[3])}
"""

_CHECK_SCRIPT = """
local w = tonumber(redis.call('GET', KEYS[1]) or '0')
return {w, redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[3])}
"""


class RedisFailureStore:
    """Failure counts in Redis, shared by all processes (atomic Lua scripts).

    Redis is not critical for authentication: when a call fails or takes longer than
    ``timeout`` seconds, the store counts in this process instead (a `MemoryFailureStore`
    with the same policy), reports itself degraded (`degraded`, `health_check`, one
    ``auth.store_degraded`` warning per ``log_every`` seconds) and tries Redis again
    ``retry_every`` seconds later, then on every call once Redis answers. Counts made in
    memory during an outage stay in memory.
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        policy: LimitPolicy | None = None,
        prefix: str = "safeship:authfail",
        timeout: float = 0.5,
        retry_every: float = 5.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("timeout", timeout), ("retry_every", retry_every),
                            ("log_every", log_every)):  # fmt: skip
            if not 0 < value < math.inf:
                raise ValueError(f"RedisFailureStore.{name} must be a positive number of seconds")
        self.policy = policy or LimitPolicy()
        self.prefix = prefix
        self.timeout = timeout
        self.retry_every = retry_every
        self.log_every = log_every
        self._clock = clock
        self._url_or_client = url_or_client
        self._client: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        self._fallback = MemoryFailureStore(policy=self.policy, clock=clock)
        self._outage = _Outage()

    def _redis(self) -> Any:
        if self._client is None:
            try:
                import redis.asyncio as aioredis
                from redis.exceptions import RedisError
            except ImportError as exc:
                if isinstance(self._url_or_client, str):
                    raise ImportError(
                        "RedisFailureStore needs redis: pip install 'safeship[redis]'"
                    ) from exc
            else:
                self._errors = (RedisError, OSError, TimeoutError)
            if isinstance(self._url_or_client, str):
                self._client = aioredis.Redis.from_url(
                    self._url_or_client,
                    socket_connect_timeout=self.timeout,
                    socket_timeout=self.timeout,
                )
            else:
                self._client = self._url_or_client
        return self._client

    def _keys(self, client: str) -> list[str]:
        base = f"{self.prefix}:{client}"
        return [f"{base}:w", f"{base}:l", f"{base}:b"]

    @property
    def degraded(self) -> bool:
        """True while failures are counted in this process because Redis failed."""
        return self._outage.since is not None

    async def check(self, client: str) -> Verdict:
        """The current verdict for ``client``."""
        reply = await self._eval(_CHECK_SCRIPT, self._keys(client))
        if reply is None:
            return self._fallback.check_now(client)
        return self._verdict(reply)

    async def record_failure(self, client: str) -> Verdict:
        """Count one failure."""
        p = self.policy
        args = (int(p.window * 1000), int(p.block_for * 1000), p.block_after)
        reply = await self._eval(_RECORD_SCRIPT, [*self._keys(client), *args])
        if reply is None:
            return await self._fallback.record_failure(client)
        return self._verdict(reply)

    async def _eval(self, script: str, keys_and_args: list[Any]) -> list[Any] | None:
        """The script's reply, or None when Redis is (still) out: count in memory then."""
        outage = self._outage
        if outage.since is not None and self._clock() < outage.retry_at:
            return None
        redis = self._redis()
        try:
            async with asyncio.timeout(self.timeout):
                reply: list[Any] = await redis.eval(script, 3, *keys_and_args)
        except self._errors as exc:
            self._went_down(exc)
            return None
        if outage.since is not None:
            self._came_back()
        return reply

    def _went_down(self, exc: BaseException) -> None:
        now = self._clock()
        outage = self._outage
        if outage.since is None:
            outage.since = now
        outage.retry_at = now + self.retry_every
        outage.failures += 1
        if now >= outage.logged_at + self.log_every:
            outage.logged_at = now
            _log.warning(
                "auth.store_degraded",
                store="redis",
                error=type(exc).__name__,
                failed_calls=outage.failures,
                fallback="memory",
            )

    def _came_back(self) -> None:
        outage = self._outage
        down_for = self._clock() - (outage.since or 0.0)
        self._outage = _Outage()
        _log.info("auth.store_recovered", store="redis", down_seconds=round(down_for, 3))

    def health_check(self) -> Callable[[], Awaitable[CheckResult]]:
        """A check for ``HealthRegistry.add`` (non-critical): warn while degraded, after
        trying Redis once more when a retry is due, so the store recovers without traffic."""

        async def check_failure_store() -> CheckResult:
            outage = self._outage
            if outage.since is not None and self._clock() >= outage.retry_at:
                await self._eval("return 1", ["", "", ""])
            if self._outage.since is None:
                return CheckResult(status="pass", component_type="datastore")
            return CheckResult(
                status="warn",
                component_type="datastore",
                output="Redis is unreachable: failed sign-ins are counted in this process",
                observed_value=round(self._clock() - self._outage.since, 3),
                observed_unit="s",
            )

        return check_failure_store

    def _verdict(self, reply: list[Any]) -> Verdict:
        in_window, window_ttl_ms, block_ttl_ms = (int(x) for x in reply)
        if block_ttl_ms > 0:
            return Verdict(False, math.ceil(block_ttl_ms / 1000), blocked=True)
        if in_window >= self.policy.max_per_window and window_ttl_ms > 0:
            return Verdict(False, max(1, math.ceil(window_ttl_ms / 1000)))
        return ALLOWED

    async def aclose(self) -> None:
        """Close the connection pool this store created from a URL."""
        if self._client is not None and isinstance(self._url_or_client, str):
            await self._client.aclose()
            self._client = None


@dataclass(slots=True)
class _Outage:
    """Since when Redis has been failing (None: it answers), and what was done about it."""

    since: float | None = None
    retry_at: float = 0.0
    logged_at: float = -math.inf
    failures: int = 0
