"""Everything a process writes about itself, as log records: warnings, uncaught exceptions.

`configure_logging` renders log records; a process also writes text that never becomes one:
`warnings.warn` output, the traceback of an exception no code caught (in the main thread,
in another thread, in a ``__del__``). `capture_process_output` routes each to a stable event
of the ``safeship.process`` logger, so it is one masked JSON line like every other.

`uvicorn_log_config` is the same for a server safeship does not start: the ``log_config``
that makes uvicorn's own loggers (``uvicorn.error``) and everything else in the process
write through safeship's pipeline, and drops uvicorn's access line (safeship's
``http.request`` line is the access log; ``access_log=True`` keeps uvicorn's too).
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from types import TracebackType
from typing import Any, TextIO

logger = logging.getLogger("safeship.process")

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def capture_process_output() -> None:
    """Log warnings and uncaught exceptions (any thread, unraisable) instead of printing them.

    Events: ``process.uncaught_exception``, ``process.thread_exception`` and
    ``process.unraisable_exception`` (CRITICAL/ERROR, with the traceback as ``exception``),
    and ``process.warning`` (WARNING, with ``category``, ``warning``, ``source_file`` and
    ``source_line``) for what `warnings.warn` would print. Calling it again changes nothing.
    """
    warnings.showwarning = _log_warning
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if file is not None:  # an explicit destination: write there, as warnings does
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    logger.warning(
        "process.warning",
        extra={
            "category": category.__name__,
            "warning": str(message),
            "source_file": filename,
            "source_line": lineno,
        },
    )


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logger.critical("process.uncaught_exception", exc_info=(kind, value, traceback))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as threading's own hook: a thread that exits is not an error
    name = args.thread.name if args.thread is not None else None
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logger.error("process.thread_exception", exc_info=exc_info, extra={"thread_name": name})


def _log_unraisable(unraisable: Any) -> None:
    value = unraisable.exc_value or unraisable.exc_type()
    logger.error(
        "process.unraisable_exception",
        exc_info=(unraisable.exc_type, value, unraisable.exc_traceback),
        extra={"context": unraisable.err_msg or "", "object": repr(unraisable.object)},
    )


def uvicorn_log_config(
    *,
    level: str = "INFO",
    fmt: str = "json",
    mask: bool = True,
    capture_process: bool = True,
    access_log: bool = False,
) -> dict[str, Any]:
    """A ``log_config`` for uvicorn that routes all of its logging through safeship's.

    ``uvicorn.run(app, log_config=uvicorn_log_config())`` (or ``--log-config`` with this
    dict saved as JSON) makes uvicorn's error logger, uncaught exceptions and warnings one
    masked JSON line each, as `configure_logging` renders them; without it, uvicorn
    installs plain-text handlers of its own. uvicorn's access logger is dropped (no
    handler, no propagation: uvicorn then does not even format the line), since
    ``protect()`` writes one ``http.request`` line per request; ``access_log=True`` keeps
    it as a second line. The dict is plain JSON data.
    """
    if fmt not in ("auto", "json", "console"):
        raise ValueError(
            f"uvicorn_log_config: fmt must be 'auto', 'json' or 'console', got {fmt!r}"
        )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "safeship": {
                "()": "safeship.observe._capture.pipeline_handler",
                "log_level": level,
                "fmt": fmt,
                "mask": mask,
                "capture_process": capture_process,
            }
        },
        "loggers": {
            name: {"handlers": [], "propagate": access_log or name != "uvicorn.access"}
            for name in _UVICORN_LOGGERS
        },
        "root": {"handlers": ["safeship"], "level": level},
    }


def pipeline_handler(
    *, log_level: str = "INFO", fmt: str = "json", mask: bool = True, capture_process: bool = True
) -> logging.Handler:
    """The handler of `uvicorn_log_config`: `configure_logging`'s, made by ``dictConfig``."""
    from safeship.observe._logging import configure_logging

    return configure_logging(
        level=log_level,
        fmt=fmt,  # type: ignore[arg-type]  # checked by uvicorn_log_config
        mask=mask,
        capture_process=capture_process,
    )
