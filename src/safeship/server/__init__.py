"""The control plane: one FastAPI service with a JSON API, a dashboard and probes."""

from safeship.server.app import build_plane, create_app

__all__ = ["build_plane", "create_app"]
