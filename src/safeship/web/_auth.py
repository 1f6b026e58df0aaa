"""API-key authentication for chosen path prefixes, with brute-force limiting."""

from __future__ import annotations

from collections.abc import Iterable

from safeship.observe import _metrics as metrics
from safeship.observe._logging import get_logger
from safeship.web._asgi import ASGIApp, PathPrefixes, Receive, Scope, Send, send_problem
from safeship.web._clients import ClientAddresses, ProxyHeader
from safeship.web._keys import DigestSet, hash_key, is_digest, presented_key
from safeship.web._limiter import FailureStore, MemoryFailureStore, Verdict

_log = get_logger("safeship.web.auth")


def _digests(keys: Iterable[str], key_digests: Iterable[str]) -> tuple[str, ...]:
    digests = [hash_key(k) for k in keys]
    for digest in key_digests:
        if not is_digest(digest):
            raise ValueError("key_digests must be hex SHA-256 digests made by hash_key()")
        digests.append(digest.lower())
    if not digests:
        raise ValueError("ApiKeyAuth needs at least one key (keys= or key_digests=)")
    return tuple(digests)


class ApiKeyAuth:
    """Require an API key on ``protected_prefixes``.

    The key is read from ``X-API-Key`` or ``Authorization: Bearer``. Keys are kept only as
    SHA-256 digests and compared in constant time. Wrong keys count as failures per client
    IP in ``store`` (429 with ``Retry-After`` when limited or blocked); the client IP is
    the socket peer unless it is one of ``trusted_proxies`` (see `ClientAddresses`). A
    missing key is answered 401 without counting. The key never appears in logs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Iterable[str] = (),
        key_digests: Iterable[str] = (),
        protected_prefixes: Iterable[str] = ("/",),
        header: str = "X-API-Key",
        store: FailureStore | None = None,
        trusted_proxies: Iterable[str] = (),
        proxy_header: ProxyHeader = "x-forwarded-for",
    ) -> None:
        self.app = app
        self._digests = DigestSet(_digests(keys, key_digests))
        self.protected_prefixes = tuple(protected_prefixes)
        if not self.protected_prefixes or any(
            not p.startswith("/") for p in self.protected_prefixes
        ):
            raise ValueError("protected_prefixes must be non-empty paths starting with '/'")
        self._is_protected = PathPrefixes(self.protected_prefixes)
        # What the PathPrefixes call checks, for `_applies` to check inline.
        self._protected_parts = self._is_protected.parts
        self._header = header.lower().encode("latin-1")
        self.store: FailureStore = store or MemoryFailureStore()
        self.clients = ClientAddresses(trusted_proxies, header=proxy_header)

    @property
    def protects(self) -> PathPrefixes:
        """Whether a path lies under the protected prefixes."""
        return self._is_protected

    @property
    def header_key(self) -> bytes:
        """The API-key header's name, lower-case bytes."""
        return self._header

    @property
    def digests(self) -> DigestSet:
        """The digests of the accepted keys."""
        return self._digests

    def _presented(self, scope: Scope) -> str | None:
        return presented_key(scope.get("headers", ()), self._header)

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] not in ("http", "websocket"):
            return False
        everything, bases, starts = self._protected_parts
        path = scope.get("path", "")
        if not (everything or path in bases or path.startswith(starts)):
            return False
        # CORS preflight carries no credentials
        return scope["type"] != "http" or scope.get("method") != "OPTIONS"

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes on to the app, decided without I/O and without
        counting anything: unprotected, or a valid key from a client not limited. False
        also when the store must be asked (not in memory): the layer itself decides then."""
        if not self._applies(scope):
            return True
        store = self.store
        if type(store) is not MemoryFailureStore:
            return False
        # A store with no failures counted allows every client: no address to work out.
        if store.known_clients and not store.check_now(self.clients.address(scope)).allowed:
            return False
        presented = presented_key(scope.get("headers", ()), self._header)
        return presented is not None and self._digests.matches(presented)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        client = self.clients.settle(scope)
        store = self.store
        if type(store) is MemoryFailureStore:
            verdict = store.check_now(client)  # no I/O: spare the coroutine
        else:
            verdict = await store.check(client)
        if not verdict.allowed:
            verdict = await self.store.record_failure(client)
            await self._reject_limited(scope, send, client, verdict)
            return
        presented = self._presented(scope)
        if presented is None:
            self._fail(scope, client, "missing")
            await self._reject(scope, send, 401, "an API key is required")
            return
        if not self._digests.matches(presented):
            verdict = await self.store.record_failure(client)
            self._fail(scope, client, "invalid")
            await self._reject(scope, send, 401, "the API key is not valid")
            return
        await self.app(scope, receive, send)

    def _fail(self, scope: Scope, client: str, reason: str, **extra: object) -> None:
        metrics.AUTH_FAILURES.labels(reason).inc()
        _log.warning("auth.failed", reason=reason, client=client, path=scope.get("path"), **extra)

    async def _reject_limited(
        self, scope: Scope, send: Send, client: str, verdict: Verdict
    ) -> None:
        reason = "blocked" if verdict.blocked else "limited"
        self._fail(scope, client, reason, retry_after=verdict.retry_after)
        await self._reject(
            scope,
            send,
            429,
            "too many failed attempts; retry later",
            headers=[(b"retry-after", str(verdict.retry_after).encode())],
        )

    async def _reject(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        extra = list(headers or [])
        if status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="api"'))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        title = "Unauthorized" if status == 401 else "Too Many Requests"
        await send_problem(send, status, title, detail, headers=extra)
