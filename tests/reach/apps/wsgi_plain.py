"""A plain WSGI app behind protect_wsgi (served by gunicorn in the tests)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from safeship.observe.health import HealthRegistry
from safeship.web import protect_wsgi

logger = logging.getLogger("reach.app")
health = HealthRegistry()


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    logger.info("app.hello", extra={"path": environ["PATH_INFO"]})
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["PATH_INFO"].encode() + b" " + str(len(body)).encode()]


app = protect_wsgi(
    hello,
    health=health,
    api_keys=[os.environ.get("REACH_KEY", "ss_reach_key_for_tests_only_0123456789")],
    protected_prefixes=["/api"],
    max_body_bytes=1024,
)
