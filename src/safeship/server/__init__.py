"""The control plane: one FastAPI service with a JSON API, a dashboard and probes.

Needs the ``server`` extra (FastAPI, uvicorn, Jinja2, pydantic and the database layer).
"""

from safeship._extras import require

require(
    "server",
    "fastapi",
    "uvicorn",
    "jinja2",
    "pydantic_settings",
    "sqlalchemy",
    feature="the control plane (safeship.server)",
)

from safeship.server.app import build_plane, create_app  # noqa: E402

__all__ = ["build_plane", "create_app"]
