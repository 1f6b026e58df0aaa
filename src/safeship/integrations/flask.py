"""A Flask extension: `protect` around a Flask app, configured in a few lines.

    from flask import Flask
    from safeship.integrations.flask import Safeship

    app = Flask(__name__)
    Safeship(app, api_keys=[os.environ["ADMIN_KEY"]], health=registry)

``Safeship(app, **options)`` wraps ``app.wsgi_app`` with `safeship.web.protect_wsgi`
(request ids, access log, metrics, probes, body limit, timeouts, API-key auth and Origin
checks, with `protect`'s keywords); options can also come from ``app.config["SAFESHIP"]``
(a dict). `request_id` is the current request's id, for the app's own code and logs.
Needs ``pip install safeship[flask]``.
"""

from __future__ import annotations

from typing import Any

from safeship._extras import require
from safeship.observe._logging import request_id as _request_id
from safeship.web._wsgi import ProtectedWSGI, protect_wsgi

__all__ = ["Safeship", "request_id"]


class Safeship:
    """Protect a Flask app; ``init_app`` for the application-factory pattern."""

    def __init__(self, app: Any | None = None, **options: Any) -> None:
        require("flask", "flask", "a2wsgi", feature="safeship.integrations.flask")
        self.options = options
        self.protected: ProtectedWSGI | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Wrap ``app.wsgi_app``; keywords given here win over ``app.config["SAFESHIP"]``."""
        options = {**dict(app.config.get("SAFESHIP", {})), **self.options}
        self.protected = protect_wsgi(app.wsgi_app, **options)
        app.wsgi_app = self.protected
        app.extensions["safeship"] = self


def request_id() -> str | None:
    """The id of the request being served (the ``X-Request-ID`` it answers with)."""
    return _request_id.get()
