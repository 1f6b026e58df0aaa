"""`protect_wsgi`: the same `protect` stack around a WSGI app (Flask, Django, plain WSGI).

There is one implementation of each guard, and it is ASGI: this module only adapts. The
WSGI app is seen as an ASGI app (a2wsgi's ``WSGIMiddleware``: it runs in a thread pool,
with the request's context variables, so the request id reaches its log lines), `protect`
wraps it, and the result is served back as WSGI (a2wsgi's ``ASGIMiddleware``, with one
event loop thread per process). The loop is made on the first request of each process,
so a server that forks after loading the app (gunicorn ``--preload``) gets one per worker.
Hop-by-hop headers an ASGI layer sets (``Connection: close`` on a refused body) are left to
the WSGI server, as PEP 3333 requires (wsgiref and ``runserver`` refuse them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.util import is_hop_by_hop

from safeship._extras import require
from safeship.web._protect import protect

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ProtectedWSGI:
    """A WSGI app behind `protect`'s layers; build it with `protect_wsgi`."""

    def __init__(self, app: WSGIApp, *, threads: int, options: dict[str, Any]) -> None:
        require("wsgi", "a2wsgi", feature="protect_wsgi")
        from a2wsgi import WSGIMiddleware

        self.wrapped = app
        self.asgi = protect(WSGIMiddleware(app, workers=threads), **options)  # type: ignore[arg-type]
        self._served: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def _adapter(self) -> Any:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    from a2wsgi import ASGIMiddleware

                    self._served = ASGIMiddleware(self.asgi)  # type: ignore[arg-type]
                    self._pid = os.getpid()
        return self._served

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(name, value) for name, value in headers if not is_hop_by_hop(name)]
            return start_response(status, kept, *exc_info)

        served: Iterable[bytes] = self._adapter()(environ, start)
        return served


def protect_wsgi(app: WSGIApp, *, threads: int = 10, **options: Any) -> ProtectedWSGI:
    """Wrap a WSGI ``app`` with `protect`'s layers; ``options`` are `protect`'s keywords
    (validated now, at start-up). ``threads`` bounds the app's concurrent requests in one
    process (a2wsgi's pool). Needs ``pip install safeship[wsgi]``.

    >>> app.wsgi_app = protect_wsgi(app.wsgi_app, api_keys=[key])   # doctest: +SKIP
    """
    if not 1 <= threads <= 1000:
        raise ValueError("protect_wsgi: threads must be between 1 and 1000")
    return ProtectedWSGI(app, threads=threads, options=options)
