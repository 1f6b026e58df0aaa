"""Every route the control plane serves, as (method, concrete path), read from the app itself
so a route added later is abused too."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from safeship.db import create_engine
from safeship.server import create_app
from tests.server.support import make_settings

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_SAMPLES = {"action": "pause"}


def _walk(routes: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
            continue
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            for method in sorted(methods - {"HEAD"}):
                yield method, _PARAM.sub(lambda m: _SAMPLES.get(m.group(1), "abuse-x"), path)


def every_route() -> list[tuple[str, str]]:
    engine = create_engine("sqlite://")
    try:
        app = create_app(make_settings("sqlite://"), engine=engine, migrate=False)
        return sorted(set(_walk(app.routes)))
    finally:
        engine.dispose()


def routes_taking_a_body() -> list[tuple[str, str]]:
    return [(m, p) for m, p in every_route() if m in ("POST", "PUT", "PATCH", "DELETE")]
