"""Where was a leaked psycopg connection opened?  An opt-in pytest plugin.

A psycopg connection garbage-collected while still open warns during whichever test the
collector happens to run in, which says nothing about where it was made.  With this plugin
(``pytest -p tests.support.connection_origins``) every connection remembers the stack that
opened it and the test running then; one deleted while still open appends both to
``$SAFESHIP_CONNECTION_ORIGINS`` (default ``connection-origins.txt``)."""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

import psycopg
import pytest

_opened: dict[int, str] = {}
_running = ["(collection)"]
_init = psycopg.Connection.__init__
_del = psycopg.Connection.__del__


def _remembering_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    where = "".join(traceback.format_stack(limit=30))
    _opened[id(self)] = f"thread {threading.current_thread().name}, test {_running[0]}\n{where}"


def _reporting_del(self: Any, *args: Any, **kwargs: Any) -> None:
    origin = _opened.pop(id(self), None)
    if origin is not None and not self.closed:
        path = os.environ.get("SAFESHIP_CONNECTION_ORIGINS", "connection-origins.txt")
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"==== open connection deleted; opened in {origin}\n")
    _del(self, *args, **kwargs)


psycopg.Connection.__init__ = _remembering_init  # type: ignore[method-assign]
psycopg.Connection.__del__ = _reporting_del  # type: ignore[method-assign]


def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[0] = item.nodeid
