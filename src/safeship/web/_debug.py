"""`require_debug_access`: hide debug routes in production unless an admin key is given."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from safeship.web._asgi import ASGIApp, Receive, Scope, Send, header_text, send_response
from safeship.web._keys import hash_key, is_digest, verify_any


class DebugAccess:
    """A guard for debug routes: open in development, admin-key only in production.

    Refusals answer 404, so debug routes are not even visible without the key. Use it as
    a FastAPI dependency (``Depends(guard)``), call `allowed` yourself, or wrap an ASGI
    sub-app with `wrap`.
    """

    def __init__(
        self,
        *,
        production: bool,
        admin_keys: Iterable[str] = (),
        admin_key_digests: Iterable[str] = (),
        header: str = "X-Admin-Key",
    ) -> None:
        digests = [hash_key(k) for k in admin_keys]
        for digest in admin_key_digests:
            if not is_digest(digest):
                raise ValueError("admin_key_digests must be digests made by hash_key()")
            digests.append(digest.lower())
        self.production = production
        self._digests = tuple(digests)
        self._header = header.lower().encode("latin-1")

    def allowed(self, scope: Scope) -> bool:
        """Whether this request may see debug routes."""
        if not self.production:
            return True
        presented = header_text(scope, self._header)
        return bool(presented and self._digests and verify_any(presented, self._digests))

    async def __call__(self, request: HTTPConnection) -> None:
        """FastAPI/Starlette dependency: raise 404 unless allowed."""
        if not self.allowed(request.scope):
            raise HTTPException(status_code=404)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """An ASGI app that answers 404 unless allowed, else runs ``app``."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and not self.allowed(scope):
                await send_response(send, 404, b"Not Found")
                return
            await app(scope, receive, send)

        return guarded


def require_debug_access(
    *,
    production: bool = True,
    admin_keys: Iterable[str] = (),
    admin_key_digests: Iterable[str] = (),
    header: str = "X-Admin-Key",
) -> DebugAccess:
    """Build a `DebugAccess` guard; production (the safe default) requires an admin key."""
    return DebugAccess(
        production=production,
        admin_keys=admin_keys,
        admin_key_digests=admin_key_digests,
        header=header,
    )
