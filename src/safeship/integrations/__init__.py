"""Framework integrations: each is a public submodule, imported only when used.

- ``safeship.integrations.flask``: `Safeship`, a Flask extension (``protect`` for the app,
  request ids and the flag client on ``flask.g``-free helpers).
- ``safeship.integrations.django``: settings-driven ``protect`` for Django's WSGI
  application, a middleware putting the request id on ``request``, and management commands.
"""

__all__: list[str] = []
