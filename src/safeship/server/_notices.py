"""The one-line notice a dashboard page shows after an action ("purged 3").

An action redirects to its page with the notice in the query string, signed with the
session's CSRF secret (``ms``); the page shows a notice only when the signature matches
the viewer's own session. A crafted link therefore cannot make a signed-in operator's
page say anything the server did not say to that operator.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse

from safeship.server.deps import request_session
from safeship.server.session import Session

MAX_NOTICE = 300


def _mac(session: Session, text: str) -> str:
    digest = hmac.new(session.csrf.encode(), b"notice\0" + text.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def notice_redirect(request: Request, path: str, text: str) -> RedirectResponse:
    """303 to ``path`` carrying ``text`` (cut to 300 characters) signed for the session of
    ``request`` (an action's form post); without a session, no notice."""
    session = request_session(request)
    if session is None:
        return RedirectResponse(path, status_code=303)
    text = text[:MAX_NOTICE]
    query = urlencode({"m": text, "ms": _mac(session, text)})
    return RedirectResponse(f"{path}?{query}", status_code=303)


def notice(request: Request) -> str | None:
    """The signed notice of this request's query string, or None (unsigned, forged, or
    signed for another session)."""
    text, signature = request.query_params.get("m"), request.query_params.get("ms")
    if not text or not signature or len(text) > MAX_NOTICE:
        return None
    session = request_session(request)
    if session is None or not hmac.compare_digest(_mac(session, text), signature):
        return None
    return text
