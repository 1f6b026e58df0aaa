"""Authentication dependencies: API key (header) or dashboard session (cookie + CSRF)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from safeship.observe._metrics import AUTH_FAILURES
from safeship.server.keys import Principal, Scope
from safeship.server.session import COOKIE_NAME, Session, csrf_matches
from safeship.server.state import plane
from safeship.web._keys import presented_key

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="A control-plane API key (read or admin scope)."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")
logger = logging.getLogger("safeship.server")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="safeship"'})


def client_ip(request: Request) -> str:
    """The client address as `ClientAddressMiddleware` settled it: the socket peer, or
    the address a proxy named in ``SAFESHIP_TRUSTED_PROXIES`` forwarded."""
    return request.client.host if request.client else "unknown"


async def authenticate_key(request: Request, presented: str) -> Principal | None:
    """Check a key, refusing clients that failed too often (429 with Retry-After)."""
    cp = plane(request)
    ip = client_ip(request)
    verdict = await cp.auth_failures.check(ip)
    if not verdict.allowed:
        AUTH_FAILURES.labels("limited").inc()
        raise HTTPException(
            429,
            "too many failed attempts; wait before retrying",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    keys = cp.keys
    if keys.stale:  # the key set is reloaded from the database: off the event loop
        principal = await run_in_threadpool(keys.authenticate, presented)
    else:  # hashing and constant-time compares only: no hop to a worker thread
        principal = keys.authenticate(presented, refresh=False)
    if principal is None:
        AUTH_FAILURES.labels("invalid").inc()
        await cp.auth_failures.record_failure(ip)
        logger.warning("server.auth_failed", extra={"client": ip})
    return principal


async def current_principal(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The caller, from an API key header or a dashboard session; 401 otherwise.

    ``api_key`` and ``bearer`` declare the two schemes in the OpenAPI document; the key
    itself is read by `presented_key`, as the ``protect()`` guard reads it.
    """
    del api_key, bearer
    presented = presented_key(request.scope.get("headers", ()))
    if presented is not None:
        principal = await authenticate_key(request, presented)
        if principal is None:
            raise _unauthorized("invalid API key")
        return principal
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        raise _unauthorized("an API key (X-API-Key or Authorization: Bearer) is required")
    session = await run_in_threadpool(request_session, request)
    if session is None:
        raise _unauthorized("the session ended (signed out, expired or its key revoked); sign in")
    if request.method not in _SAFE_METHODS and not csrf_matches(
        session, request.headers.get("X-CSRF-Token")
    ):
        raise HTTPException(403, "missing or wrong X-CSRF-Token for a session request")
    return session.principal


def request_session(request: Request) -> Session | None:
    """The live session of ``request``'s cookie (its key's current scope), or None.

    Looked up in the database once per request, then kept on ``request.state``.
    """
    state = request.state
    if not hasattr(state, "safeship_session"):
        cookie = request.cookies.get(COOKIE_NAME)
        state.safeship_session = plane(request).sessions.resolve(cookie) if cookie else None
    found: Session | None = state.safeship_session
    return found


def require(scope: Scope) -> object:
    """A dependency that admits principals holding ``scope`` (admin implies read)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(scope):
            raise HTTPException(403, f"this action needs the {scope} scope")
        return principal

    return Depends(check)


ReadPrincipal = Annotated[Principal, require("read")]
AdminPrincipal = Annotated[Principal, require("admin")]
