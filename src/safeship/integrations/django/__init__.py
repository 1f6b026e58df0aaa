"""Django integration: `protect` for Django's WSGI application, driven by settings.

In ``settings.py``::

    INSTALLED_APPS = [..., "safeship.integrations.django"]
    MIDDLEWARE = ["safeship.integrations.django.RequestIdMiddleware", ...]
    SAFESHIP = {"api_keys": [os.environ["ADMIN_KEY"]], "protected_prefixes": ["/admin"]}

and in ``wsgi.py``::

    from safeship.integrations.django import get_wsgi_application
    application = get_wsgi_application()

``SAFESHIP`` holds `protect`'s keywords (validated when the application is built). The
middleware gives every request ``request.request_id`` (the id the outer layer assigned,
or, under Django's test client or ``runserver`` without the WSGI wrapper, one made by the
same rules) and echoes it in ``X-Request-ID``. Commands: ``manage.py safeship_check``
(build the protected application: a bad setting fails here) and ``manage.py
safeship_health`` (run ``SAFESHIP["health"]``'s readiness checks). Needs
``pip install safeship[django]``.

The outbox in the ORM's transaction::

    with transaction.atomic():
        order = Order.objects.create(...)
        stage(outbox_connection(), aggregate_type="order", aggregate_id=str(order.pk), ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safeship._extras import require
from safeship.observe._logging import request_id
from safeship.web._request_id import _random_id, is_safe_id
from safeship.web._wsgi import ProtectedWSGI, protect_wsgi

__all__ = [
    "RequestIdMiddleware",
    "get_wsgi_application",
    "outbox_connection",
    "safeship_options",
]

HEADER = "X-Request-ID"


def safeship_options() -> dict[str, Any]:
    """`protect`'s keywords from ``settings.SAFESHIP`` (a dict; empty when unset)."""
    from django.conf import settings

    options = getattr(settings, "SAFESHIP", {}) or {}
    if not isinstance(options, dict):
        raise TypeError("settings.SAFESHIP must be a dict of safeship.web.protect keywords")
    return dict(options)


def get_wsgi_application() -> ProtectedWSGI:
    """Django's WSGI application behind `protect`, configured by ``settings.SAFESHIP``."""
    require("django", "django", "a2wsgi", feature="safeship.integrations.django")
    from django.core.wsgi import get_wsgi_application as django_application

    application = django_application()
    return protect_wsgi(application, **safeship_options())


def outbox_connection(using: str = "default") -> Any:
    """The driver connection under Django's ``using`` database, for `safeship.outbox.stage`
    (and `stage_many`) inside ``transaction.atomic()``: the event commits or rolls back with
    the ORM's writes, on the ORM's own connection.

    PostgreSQL through psycopg 3 (Django's backend when psycopg 3 is installed) and SQLite
    are supported. Outside an atomic block it raises ``RuntimeError``: in Django's
    autocommit mode the event would commit on its own, apart from the business write.
    """
    from django.db import connections

    connection = connections[using]
    if not connection.in_atomic_block:
        raise RuntimeError(
            "outbox_connection(): call it inside transaction.atomic(), so the event "
            "commits with the ORM's writes"
        )
    connection.ensure_connection()
    raw = connection.connection
    module = type(raw).__module__
    if connection.vendor == "sqlite" or module.split(".")[0] == "psycopg":
        return raw
    raise RuntimeError(
        f"outbox_connection(): the {connection.vendor} backend's {type(raw).__name__} is not "
        "supported (use PostgreSQL with psycopg 3, or SQLite)"
    )


class RequestIdMiddleware:
    """Put the request id on ``request.request_id`` and in the ``X-Request-ID`` answer."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        current = request_id.get()
        token = None
        if current is None:  # no outer layer (test client, runserver): the same id rules
            incoming = request.headers.get(HEADER)
            current = incoming if incoming and is_safe_id(incoming) else _random_id()
            token = request_id.set(current)
        request.request_id = current
        try:
            response = self.get_response(request)
        finally:
            if token is not None:
                request_id.reset(token)
        response[HEADER] = current
        return response
