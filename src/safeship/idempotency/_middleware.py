"""``IdempotencyMiddleware``: the IETF ``Idempotency-Key`` semantics for an ASGI app.

Per request on an idempotent route: read the body (bounded), fingerprint it, claim the key
scoped by the caller, then run the handler once and keep its response -- or answer from
what the key holds: a replay, 422 for another payload, 409 + ``Retry-After`` while the
first run is alive, 409 "outcome unknown" (or the route's ``reconcile``) after it raised
or died.  Nothing here re-runs a handler silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal

from safeship.idempotency import _metrics as metrics
from safeship.idempotency._errors import (
    IdempotencyConfigError,
    IdempotencyError,
    IdempotencyStoreError,
)
from safeship.idempotency._http import (
    DOCS_URL,
    OPTIONS_ATTRIBUTE,
    ResponseLike,
    RouteOptions,
    Tee,
    check_help_url,
    send_problem,
    send_replay,
    should_store,
    stored_from,
)
from safeship.idempotency._lease import leases
from safeship.idempotency._model import Record, State, fingerprint, parse_key, scoped_key
from safeship.idempotency._store import Store

__all__ = [
    "IdempotencyMiddleware",
    "KeyHandle",
    "Principal",
    "key_of",
    "principal_from_header",
    "principal_from_user",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Who is calling: a stable id of the authenticated caller, or None when there is none.
Principal = Callable[[Scope], str | None]

_log = logging.getLogger("safeship.idempotency")
_HEADER = b"idempotency-key"
_STATE_KEY = "safeship.idempotency"
_UNSAFE = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_ROUTE_CACHE = 1024


def principal_from_header(name: str) -> Principal:
    """The caller is the SHA-256 of header ``name`` (an API key, say): never stored raw."""
    wanted = name.lower().encode("latin-1")

    def principal(scope: Scope) -> str | None:
        for key, value in scope.get("headers", ()):
            if key == wanted and value:
                return "h:" + hashlib.sha256(value).hexdigest()
        return None

    return principal


def principal_from_user(scope: Scope) -> str | None:
    """The caller is Starlette's authenticated user (``AuthenticationMiddleware`` sets
    ``scope["user"]``): its ``identity``, or None when it is not authenticated."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    identity = str(getattr(user, "identity", "") or "")
    return "u:" + identity if identity else None


class KeyHandle:
    """The claimed key of the request being handled (``key_of(request)``).

    On a SQL store, :meth:`record` / :meth:`arecord` write the response into the handler's
    own transaction, so the key's record, the business write and any ``stage()``d outbox
    event commit together; the middleware then only replays it.
    """

    def __init__(self, store: Store, key: str, stored_key: str, token: str, options: RouteOptions):
        self.key = key
        self._store = store
        self._stored_key = stored_key
        self._token = token
        self._options = options
        self.recorded = False

    def _statement(self, conn: Any, response: ResponseLike) -> Any:
        from safeship.idempotency._sql import SqlStore, complete_statement
        from safeship.idempotency._store import to_ms

        if not isinstance(self._store, SqlStore):
            raise IdempotencyConfigError("record() needs the middleware's store to be a SqlStore")
        bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
        if bind.dialect.name != self._store.dialect:
            raise IdempotencyConfigError("record() needs a connection to the store's database")
        stored = stored_from(
            response.status_code,
            response.raw_headers,
            bytes(response.body),
            body_kept=len(response.body) <= self._options.max_response_bytes,
            keep=self._options.replay_headers,
        )
        ttl_ms = to_ms(self._options.ttl, "ttl")
        return complete_statement(
            self._store.dialect, self._stored_key, self._token, stored, ttl_ms
        )

    def _done(self, rowcount: int) -> None:
        if rowcount != 1:
            raise IdempotencyStoreError("this request no longer holds its idempotency key")
        self.recorded = True

    def record(self, conn: Any, response: ResponseLike) -> None:
        """Store ``response`` for this key in ``conn``'s (sync) transaction."""
        self._done(conn.execute(*self._statement(conn, response)).rowcount)

    async def arecord(self, conn: Any, response: ResponseLike) -> None:
        """:meth:`record` for an ``AsyncConnection`` / ``AsyncSession``."""
        self._done((await conn.execute(*self._statement(conn, response))).rowcount)


def key_of(request_or_scope: Any) -> KeyHandle | None:
    """The `KeyHandle` of a request (Starlette ``Request`` or ASGI scope), if it has one."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    handle = scope.get("state", {}).get(_STATE_KEY)
    return handle if isinstance(handle, KeyHandle) else None


class _BodyTooLargeError(IdempotencyError):
    """The request body passed the route's max_body_bytes."""


class IdempotencyMiddleware:
    """Apply ``Idempotency-Key`` to the routes marked with `idempotent` (and, with
    ``default=RouteOptions(...)``, to every other POST/PATCH/PUT/DELETE route).

    ``principal`` is required: keys are always scoped by the caller, so one caller never
    sees another's response.  ``on_store_error="closed"`` (the default) answers 503
    while the store is down; ``"open"`` runs the handler without idempotency, counted.
    Every problem answer carries ``Link: <help_url#name>; rel="help"`` (the section of
    safeship's docs on that answer by default; your own page, or None for no link).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        principal: Principal | None,
        default: RouteOptions | None = None,
        on_store_error: Literal["closed", "open"] = "closed",
        help_url: str | None = DOCS_URL,
    ) -> None:
        if principal is None or not callable(principal):
            raise IdempotencyConfigError(
                "principal: IdempotencyMiddleware needs a function scope -> caller id (for "
                "example principal_from_header('x-api-key')), so keys are scoped per caller"
            )
        if on_store_error not in ("closed", "open"):
            raise IdempotencyConfigError("on_store_error must be 'closed' or 'open'")
        if default is not None and not isinstance(default, RouteOptions):
            raise IdempotencyConfigError("default must be a RouteOptions")
        check_help_url(help_url)
        self.app = app
        self.store = store
        self.principal = principal
        self.default = default
        self.fail_open = on_store_error == "open"
        self.help_url = help_url
        self._routes: OrderedDict[tuple[int, str, str], RouteOptions | None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _UNSAFE:
            await self.app(scope, receive, send)
            return
        options = self._options(scope)
        if options is None:
            await self.app(scope, receive, send)
            return
        await _Request(self, options, scope, receive, send).handle()

    def _options(self, scope: Scope) -> RouteOptions | None:
        app = scope.get("app")
        cache_key = (id(app), scope["method"], scope["path"])
        if cache_key in self._routes:
            return self._routes[cache_key]
        options = _route_options(app, scope)
        if options is None:
            options = self.default
        self._routes[cache_key] = options
        if len(self._routes) > _ROUTE_CACHE:
            self._routes.popitem(last=False)
        return options


def _route_options(app: Any, scope: Scope) -> RouteOptions | None:
    from starlette.routing import Match

    for route in getattr(getattr(app, "router", app), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            options = getattr(getattr(route, "endpoint", None), OPTIONS_ATTRIBUTE, None)
            return options if isinstance(options, RouteOptions) else None
    return None


class _Request:
    """One request through the middleware (kept as an object so each step stays short)."""

    def __init__(
        self,
        mw: IdempotencyMiddleware,
        options: RouteOptions,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.mw, self.options, self.scope, self.receive, self.send = (
            mw,
            options,
            scope,
            receive,
            send,
        )
        self.store = mw.store
        self.content_type = b""  # set by handle()

    async def _problem(
        self,
        status: int,
        name: str,
        title: str,
        detail: str,
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        await send_problem(
            self.send, status, name, title, detail, headers=headers, help_url=self.mw.help_url
        )

    async def handle(self) -> None:
        raw = length = content_type = None
        for name, value in self.scope.get("headers", ()):  # the three we need, in one pass
            if name == _HEADER and raw is None:  # the first of each, as everywhere else
                raw = bytes(value)
            elif name == b"content-length" and length is None:
                length = bytes(value)
            elif name == b"content-type" and content_type is None:
                content_type = bytes(value)
        self.content_type = content_type or b""
        if raw is None:
            if self.options.required:
                await self._problem(
                    400,
                    "key-missing",
                    "Idempotency-Key required",
                    "This operation needs an Idempotency-Key header (a UUID).",
                )
            else:
                await self.mw.app(self.scope, self.receive, self.send)
            return
        try:
            key = parse_key(raw.decode("latin-1"))
        except ValueError as exc:
            await self._problem(400, "key-invalid", "Invalid Idempotency-Key", str(exc))
            return
        principal = self.mw.principal(self.scope)
        if not principal:
            await self._problem(
                401,
                "caller-unknown",
                "Caller not authenticated",
                "Idempotency keys are kept per caller; authenticate first.",
            )
            return
        try:
            body = await self._read_body(length)
        except _BodyTooLargeError:
            await self._problem(
                413,
                "body-too-large",
                "Request body too large",
                f"Idempotent requests are limited to {self.options.max_body_bytes} bytes.",
            )
            return
        # The "http:" namespace keeps a principal from ever meeting a `once` scope's keys.
        await self._with_key(key, scoped_key("http:" + principal, key), body)

    async def _read_body(self, declared: bytes | None) -> list[bytes]:
        cap = self.options.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _BodyTooLargeError
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise _BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks

    def _fingerprint(self, body: list[bytes]) -> str:
        query = self.scope.get("query_string", b"").decode("latin-1")
        target = self.scope["path"] + ("?" + query if query else "")
        content_type = self.content_type.decode("latin-1")
        return fingerprint(self.scope["method"], target, content_type, body)

    async def _with_key(
        self, key: str, stored_key: str, body: list[bytes], *, again: bool = True
    ) -> None:
        fp = self._fingerprint(body)
        try:  # only the store's own calls: an error the handler raises is never "store down"
            claim = await self.store.claim(
                stored_key,
                fp,
                lease=self.options.lease,
                ttl=self.options.ttl,
                unknown_ttl=self.options.unknown_ttl,
            )
        except IdempotencyStoreError as exc:
            await self._store_down(exc, body)
            return
        if claim.token is not None:
            metrics.claimed("http")
            await self._run(key, stored_key, claim.token, body)
        elif claim.existing is None and again:  # expired between claim and read: once more
            await self._with_key(key, stored_key, body, again=False)
        else:
            await self._answer_existing(key, stored_key, fp, claim.existing, body)

    async def _store_down(self, exc: Exception, body: list[bytes], *, may_run: bool = True) -> None:
        """503, or with ``on_store_error="open"`` the handler without a key -- but never
        for a key whose first run may have acted (``may_run=False``)."""
        metrics.store_error("http")
        _log.warning(
            "idempotency.store_error", extra={"error": str(exc), "fail_open": self.mw.fail_open}
        )
        if self.mw.fail_open and may_run:
            await self.mw.app(self.scope, _replaying(body, self.receive), self.send)
            return
        await self._problem(
            503,
            "store-unavailable",
            "Idempotency store unavailable",
            "The request was not run, so it cannot run twice; retry shortly.",
            headers=[(b"retry-after", b"1")],
        )

    async def _answer_existing(
        self, key: str, stored_key: str, fp: str, record: Record | None, body: list[bytes]
    ) -> None:
        if record is None:  # it expired twice in a row under us: let the client come back
            await self._in_flight(None)
            return
        metrics.duplicate("http")
        if record.fingerprint != fp:
            metrics.conflict("payload_mismatch")
            await self._problem(
                422,
                "key-reused",
                "Idempotency-Key reused",
                "This key was used for a different request; use a new key.",
            )
        elif record.state is State.DONE and record.response is not None:
            metrics.replayed()
            await send_replay(self.send, record.response, help_url=self.mw.help_url)
        elif record.state is State.IN_FLIGHT:
            await self._in_flight(record.retry_after)
        else:
            await self._unknown(key, stored_key, body)

    async def _in_flight(self, retry_after: float | None) -> None:
        metrics.conflict("in_flight")
        seconds = str(max(1, math.ceil(retry_after or 1))).encode()
        await self._problem(
            409,
            "in-flight",
            "Request in progress",
            "The first request with this key is still running; retry later.",
            headers=[(b"retry-after", seconds)],
        )

    async def _unknown(self, key: str, stored_key: str, body: list[bytes]) -> None:
        reconcile = self.options.reconcile
        if reconcile is None:
            metrics.conflict("outcome_unknown")
            await self._problem(
                409,
                "outcome-unknown",
                "Outcome unknown",
                "The first request with this key failed or was cut off and may "
                "have acted. Check the resource; to act now, use a new key. This "
                f"key is released {self.options.unknown_ttl:g} s after the failure, "
                "then a request with it runs again.",
            )
            return
        try:
            token = await self.store.take_over(
                stored_key, lease=self.options.lease, unknown_ttl=self.options.unknown_ttl
            )
        except IdempotencyStoreError as exc:
            await self._store_down(exc, body, may_run=False)
            return
        if token is None:  # another retry is reconciling it right now
            await self._in_flight(self.options.lease)
            return
        try:
            found = await reconcile(key, self.scope)
        except BaseException:
            await self._settle_unknown(stored_key, token, "reconcile_raised")
            raise
        _log.info("idempotency.reconciled", extra={"rerun": found is None})
        if found is None:
            await self._run(key, stored_key, token, body)
            return
        stored = stored_from(
            found.status_code,
            found.raw_headers,
            bytes(found.body),
            body_kept=len(found.body) <= self.options.max_response_bytes,
            keep=self.options.replay_headers,
        )
        try:
            await self.store.complete(stored_key, token, stored, ttl=self.options.ttl)
        except IdempotencyStoreError as exc:  # the caller still gets the outcome found
            _log.warning("idempotency.store_error", extra={"error": str(exc), "step": "reconcile"})
        metrics.replayed()
        await send_replay(self.send, stored, help_url=self.mw.help_url)

    async def _run(self, key: str, stored_key: str, token: str, body: list[bytes]) -> None:
        handle = KeyHandle(self.store, key, stored_key, token, self.options)
        self.scope.setdefault("state", {})[_STATE_KEY] = handle
        tee = Tee(self.options.max_response_bytes)

        async def send(message: Message) -> None:
            tee.see(message)
            await self.send(message)

        held = leases()
        lease = held.hold(
            self.store,
            stored_key,
            token,
            lease=self.options.lease,
            unknown_ttl=self.options.unknown_ttl,
        )
        metrics.in_flight(1)
        try:
            await self.mw.app(self.scope, _replaying(body, self.receive), send)
        except BaseException:
            await self._settle_unknown(stored_key, token, "raised")
            raise
        finally:
            held.drop(lease)
            metrics.in_flight(-1)
        await self._settle(handle, tee)

    async def _settle_unknown(self, stored_key: str, token: str, why: str) -> None:
        metrics.unknown_outcome()
        _log.warning("idempotency.outcome_unknown", extra={"key_hash": stored_key, "why": why})
        with contextlib.suppress(IdempotencyStoreError):
            await asyncio.shield(
                self.store.mark_unknown(stored_key, token, unknown_ttl=self.options.unknown_ttl)
            )

    async def _settle(self, handle: KeyHandle, tee: Tee) -> None:
        stored_key, token = handle._stored_key, handle._token
        if handle.recorded:
            # Committed with the handler's transaction (a no-op), or rolled back with it.
            with contextlib.suppress(IdempotencyStoreError):
                if await self.store.mark_unknown(
                    stored_key, token, unknown_ttl=self.options.unknown_ttl
                ):
                    metrics.unknown_outcome()
            return
        if tee.status is None or not tee.complete:
            await self._settle_unknown(stored_key, token, "response_incomplete")
            return
        try:
            if should_store(tee.status, self.options):
                await self.store.complete(
                    stored_key, token, tee.stored(self.options.replay_headers), ttl=self.options.ttl
                )
            else:
                await self.store.release(stored_key, token)
        except IdempotencyStoreError as exc:
            # The response went out; the key stays in flight until its lease ends, then unknown.
            _log.warning("idempotency.store_error", extra={"error": str(exc), "step": "settle"})


def _replaying(body: list[bytes], receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"".join(body), "more_body": False}
        return await receive()

    return replay
