"""CSRF protection for cookie-authenticated requests, from ``Origin``/``Sec-Fetch-Site``.

Browsers attach cookies to cross-site requests but also say where a request comes from:
``Sec-Fetch-Site`` (modern browsers) and ``Origin`` (every browser on unsafe methods).
An unsafe request that carries cookies is refused (403) unless it is same-origin, was
typed by the user, or comes from an allow-listed origin.
"""

from __future__ import annotations

from collections.abc import Iterable

from safeship.web._asgi import ASGIApp, Receive, Scope, Send, header_text, send_problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginCheckMiddleware:
    """Refuse cross-site unsafe requests that carry cookies.

    ``allowed_origins`` are full origins (``https://app.example.com``). With
    ``cookies_only=False`` every unsafe request is checked, cookies or not. A request
    with neither header (a non-browser client) passes unless ``require_origin``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Iterable[str] = (),
        cookies_only: bool = True,
        require_origin: bool = False,
    ) -> None:
        self.app = app
        origins = {_normalize_origin(o) for o in allowed_origins}
        for origin in origins:
            if "://" not in origin or origin.count("/") != 2:
                raise ValueError(
                    f"allowed origin {origin!r} must look like 'https://host[:port]' "
                    "(scheme and host, no path)"
                )
        self.allowed_origins = frozenset(origins)
        self.cookies_only = cookies_only
        self.require_origin = require_origin

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") in SAFE_METHODS:
            return False
        return not self.cookies_only or header_text(scope, b"cookie") is not None

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes on to the app (safe, or from an allowed origin)."""
        return not self._applies(scope) or self.refusal(scope) is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = self.refusal(scope) if self._applies(scope) else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        await send_problem(send, 403, "Forbidden", f"cross-site request refused: {reason}")

    def refusal(self, scope: Scope) -> str | None:
        """Why this unsafe request must be refused, or None when it may pass."""
        origin = header_text(scope, b"origin")
        if origin is not None and _normalize_origin(origin) in self._trusted(scope):
            return None
        site = header_text(scope, b"sec-fetch-site")
        if site is not None:
            if site.lower() in ("same-origin", "none"):
                return None
            return f"Sec-Fetch-Site is {site!r} and Origin {origin!r} is not allowed"
        if origin is None:
            return "no Origin header" if self.require_origin else None
        return f"Origin {origin!r} is not allowed"

    def _trusted(self, scope: Scope) -> frozenset[str]:
        host = header_text(scope, b"host")
        if not host:
            return self.allowed_origins
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return self.allowed_origins | {f"{scheme}://{host.lower()}"}
