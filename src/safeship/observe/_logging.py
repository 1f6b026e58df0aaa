"""Structured logging on structlog, routed through stdlib ``logging``.

safeship's own modules log through stdlib loggers with stable event names and never
configure logging on import. `configure_logging` (called by the application, and by
`safeship.web._protect` when nothing else configured logging) renders every record —
safeship's, uvicorn's, SQLAlchemy's — as one JSON line, or readable colour output in
development, with request id, trace id and bound context added and PII masked.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from typing import Any, Literal, TextIO

import structlog
from structlog.contextvars import (
    bind_contextvars,
    bound_contextvars,
    clear_contextvars,
    get_contextvars,
    unbind_contextvars,
)

from safeship.observe._masking import PiiMasker
from safeship.observe._metrics import LOG_ALERTS
from safeship.observe._rendering import JsonLineRenderer, UtcTimestamper

#: Level for conditions an operator must act on (between ERROR and CRITICAL).
ALERT = 45
logging.addLevelName(ALERT, "ALERT")

Format = Literal["auto", "json", "console"]

#: The current request's id (set by `safeship.web.RequestIdMiddleware`).
request_id: ContextVar[str | None] = ContextVar("safeship_request_id", default=None)

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    ALERT: "alert",
    logging.CRITICAL: "critical",
}
_HANDLER_MARK = "_safeship_handler"
_NOT_IN_TEXT = frozenset({"event", "exc_info"})
_configured = False


class _EventDict(dict[str, Any]):
    """An event dict that still reads well when stdlib formats it without structlog."""

    def __str__(self) -> str:
        rest = " ".join(f"{k}={v!r}" for k, v in self.items() if k not in _NOT_IN_TEXT)
        return f"{self.get('event', '')} {rest}".rstrip()


class Logger:
    """A small structured logger over a stdlib logger: ``log.info("order.placed", id=3)``.

    Context bound with `bind` or `bind_context` is captured when the event is logged.
    """

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any] | None = None) -> None:
        self._logger = logger
        self._context = dict(context or {})

    @property
    def name(self) -> str:
        """The underlying stdlib logger's name."""
        return self._logger.name

    def bind(self, **kv: Any) -> Logger:
        """Return a logger that adds ``kv`` to every event."""
        return Logger(self._logger, {**self._context, **kv})

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be emitted."""
        return self._logger.isEnabledFor(level)

    def debug(self, event: str, **kv: Any) -> None:
        """Log a debug event."""
        self._emit(logging.DEBUG, event, kv)

    def info(self, event: str, **kv: Any) -> None:
        """Log a routine event."""
        self._emit(logging.INFO, event, kv)

    def warning(self, event: str, **kv: Any) -> None:
        """Log something unexpected that the service survived."""
        self._emit(logging.WARNING, event, kv)

    def error(self, event: str, **kv: Any) -> None:
        """Log a failure of one operation."""
        self._emit(logging.ERROR, event, kv)

    def exception(self, event: str, **kv: Any) -> None:
        """Log an error with the current exception's traceback."""
        kv.setdefault("exc_info", True)
        self._emit(logging.ERROR, event, kv)

    def alert(self, event: str, **kv: Any) -> None:
        """Log a condition an operator must act on; also counted in a metric."""
        _count_alert(self._logger.name)
        self._emit(ALERT, event, kv)

    def critical(self, event: str, **kv: Any) -> None:
        """Log a failure of the whole service."""
        self._emit(logging.CRITICAL, event, kv)

    def log(self, level: int, event: str, **kv: Any) -> None:
        """Log at a numeric level."""
        if level == ALERT:
            _count_alert(self._logger.name)
        self._emit(level, event, kv)

    def event(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """Log ``event`` with ``fields`` (a dict the logger may keep: pass a fresh one).

        `log` without keyword arguments, for fields already in a dict; the caller checks
        `is_enabled_for` first when building the fields costs anything.
        """
        if level == ALERT:
            _count_alert(self._logger.name)
        self._emit(level, event, fields)

    @property
    def context(self) -> Mapping[str, Any]:
        """What `bind` added to every event of this logger."""
        return self._context

    def _emit(self, level: int, event: str, kv: dict[str, Any]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        exc_info = kv.pop("exc_info", None)
        data = _EventDict(event=event)
        bound = get_contextvars()
        if bound:
            data.update(bound)
        rid = request_id.get()
        if rid is not None:
            data.setdefault("request_id", rid)
        if self._context:
            data.update(self._context)
        data.update(kv)
        if exc_info:
            exc_info = sys.exc_info() if exc_info is True else exc_info
            data["exc_info"] = exc_info
        name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
        # The record structlog's ProcessorFormatter renders: the event dict as the message,
        # the stdlib logger and the level's method name as structlog's wrapper sets them.
        # No caller lookup (Logger.log's findCaller): the event name says where it is from.
        record = logger.makeRecord(logger.name, level, "", 0, data, (), exc_info or None)
        record._logger = logger  # what structlog's wrap_for_formatter sets, as extra fields
        record._name = name
        logger.handle(record)


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes routine lines at the end of the event-loop iteration.

    A record below WARNING emitted while an event loop runs in this thread (access-log
    lines, mostly) is formatted at once and its line kept until the end of the loop's
    iteration, when the lines of every request that ended in it are written with one
    write. Any other record first writes the kept lines, then its own, so the stream
    keeps the records' order; `flush` and `close` write them too (so `logging.shutdown`
    does at exit). With ``batch`` off, or a stream without a file descriptor
    (``io.StringIO``: nothing to save, and a test reads it at once), every line is
    written as it is emitted.
    """

    def __init__(self, stream: TextIO, *, batch: bool = True) -> None:
        super().__init__(stream)
        self.batch = batch
        self._pending: list[str] = []
        self._flushing_loops: set[Any] = set()  # loops with a flush to come
        self._fd_stream: tuple[object, bool] = (None, False)

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record``; write its line now or at the end of the loop's iteration.

        `logging.Handler.handle` holds the handler's lock.
        """
        try:
            formatter = self.formatter  # Handler.format without its call when set
            text = (formatter or self).format(record) + self.terminator
            loop = None
            if self.batch and record.levelno < logging.WARNING:
                asyncio = sys.modules.get("asyncio")  # no loop runs before it is imported
                if asyncio is not None:
                    try:
                        loop = asyncio.get_running_loop()
                    except RuntimeError:
                        loop = None
            to_file = self._fd_stream[1] if self._fd_stream[0] is self.stream else self._to_file()
            if loop is None or not to_file:
                self._write(text)
                return
            self._pending.append(text)
            if loop not in self._flushing_loops:
                # Each loop that keeps a line flushes them: one stopped loop (or one
                # blocked in another thread) never holds back the lines of another.
                self._flushing_loops.add(loop)
                loop.call_soon(self._flush_for, loop)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)

    def _write(self, text: str) -> None:
        """Write the kept lines, then ``text``, and flush (the caller holds the lock)."""
        if self._pending:
            text = "".join(self._pending) + text
            self._pending = []
            self._flushing_loops.clear()  # the lines they would flush are written now
        stream = self.stream
        stream.write(text)
        stream.flush()

    def _flush_for(self, loop: Any) -> None:
        """Write the kept lines (the end of an iteration of ``loop``)."""
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            self._flushing_loops.discard(loop)
            if self._pending:  # else written already, by another write through here
                self._write_pending()

    def _to_file(self) -> bool:
        stream = self.stream
        seen, to_file = self._fd_stream
        if seen is not stream:
            try:
                to_file = isinstance(stream.fileno(), int)
            except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation too
                to_file = False
            self._fd_stream = (stream, to_file)
        return to_file

    def flush(self) -> None:
        """Write the kept lines, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the kept lines and flush the stream (the caller holds the lock); a
        failure is reported, not raised."""
        try:
            if self._pending:
                self._write("")
            else:
                super().flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(logging.makeLogRecord({"msg": "pending log lines"}))  # no PII

    def close(self) -> None:
        """Write the kept lines, then close as a StreamHandler does."""
        if self._pending:
            self.flush()
        super().close()


def get_logger(name: str, **context: Any) -> Logger:
    """A structured logger writing to the stdlib logger ``name``."""
    return Logger(logging.getLogger(name), context)


def has_bound_context() -> bool:
    """Whether anything is bound (`bind_context`) in this context."""
    return bool(get_contextvars())


def bind_context(**kv: Any) -> Mapping[str, Token[Any]]:
    """Bind ``kv`` to every event logged in this context (task or thread)."""
    return bind_contextvars(**kv)


def unbind_context(*keys: str) -> None:
    """Remove keys bound with `bind_context`."""
    unbind_contextvars(*keys)


def clear_context() -> None:
    """Remove everything bound with `bind_context` in this context."""
    clear_contextvars()


@contextmanager
def bound_context(**kv: Any) -> Iterator[None]:
    """Bind ``kv`` for the duration of a ``with`` block."""
    with bound_contextvars(**kv):
        yield


#: Where an exception keeps the id of the request it escaped from (`note_request_id`).
_ESCAPED_FROM = "__safeship_request_id__"


def note_request_id(exc: BaseException, rid: str) -> None:
    """Mark ``exc`` with the id of the request it escapes from.

    The server logs an exception its application raised after the request's context is
    gone (uvicorn's ``Exception in ASGI application``); `add_request_id` reads the id
    from the exception then. The innermost request's id is kept.
    """
    if getattr(exc, _ESCAPED_FROM, None) is None:
        with suppress(AttributeError):  # an exception type that takes no attributes
            setattr(exc, _ESCAPED_FROM, rid)


def add_request_id(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Processor: add the current request id, or the one of the request the logged
    exception escaped from, when there is one."""
    rid = request_id.get()
    if rid is None:
        exc_info = event_dict.get("exc_info")
        if type(exc_info) is tuple and len(exc_info) == 3:
            rid = getattr(exc_info[1], _ESCAPED_FROM, None)
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


#: ``extra`` fields meant for a terminal only (uvicorn's ANSI-coloured copy of its message).
_TERMINAL_FIELDS = ("color_message",)


def drop_terminal_fields(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Processor for stdlib records: drop the copies of the message made for terminals."""
    for key in _TERMINAL_FIELDS:
        event_dict.pop(key, None)
    return event_dict


def add_trace_context(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Processor: add ``trace_id``/``span_id`` of the active OpenTelemetry span."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event_dict
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def count_foreign_alerts(_logger: Any, method: str, event_dict: Any) -> Any:
    """Processor for stdlib records: count ALERT records of non-safeship loggers.

    Records of ``safeship.*`` loggers are counted by a handler on the ``safeship``
    logger instead, so they count even when logging is not configured.
    """
    if method == "alert":
        name = getattr(event_dict.get("_record"), "name", "root")
        if not _is_safeship(name):
            LOG_ALERTS.labels(name).inc()
    return event_dict


def _is_safeship(name: str) -> bool:
    return name == "safeship" or name.startswith("safeship.")


def _count_alert(name: str) -> None:
    """Count an alert of a structured `Logger` (safeship's own are counted by the handler)."""
    if not _is_safeship(name):
        LOG_ALERTS.labels(name).inc()


class _AlertCounter(logging.Handler):
    """Counts ALERT records of safeship's own loggers; writes nothing."""

    def __init__(self) -> None:
        super().__init__(level=ALERT)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == ALERT:
            LOG_ALERTS.labels(record.name).inc()


def _install_alert_counter() -> None:
    """Attach the counter once; it emits nothing, so logging output stays unconfigured."""
    library = logging.getLogger("safeship")
    if not any(isinstance(h, _AlertCounter) for h in library.handlers):
        library.addHandler(_AlertCounter())


_install_alert_counter()


class SamplingFilter(logging.Filter):
    """Keep only a fraction of chosen routine events; warnings and above always pass.

    ``rates`` maps an event name (``"cache.hit"``) to the fraction kept (``0.01``).
    """

    def __init__(
        self, rates: Mapping[str, float], *, rng: Callable[[], float] = random.random
    ) -> None:
        super().__init__()
        for event, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"sample rate for {event!r} must be within 0..1, got {rate}")
        self.rates = dict(rates)
        self._rng = rng

    def filter(self, record: logging.LogRecord) -> bool:
        """Decide whether ``record`` is emitted."""
        if record.levelno >= logging.WARNING or not self.rates:
            return True
        msg = record.msg
        event = msg.get("event") if isinstance(msg, dict) else msg
        rate = self.rates.get(event) if isinstance(event, str) else None
        return rate is None or self._rng() < rate


def configure_logging(
    *,
    level: int | str = "INFO",
    fmt: Format = "auto",
    stream: TextIO | None = None,
    masker: PiiMasker | None = None,
    mask: bool = True,
    sample_rates: Mapping[str, float] | None = None,
    loggers: Mapping[str, int | str] | None = None,
    batch_access_log: bool = True,
    capture_process: bool = False,
) -> logging.Handler:
    """Route all stdlib and structlog logging through one structured pipeline.

    ``fmt="auto"`` renders JSON lines unless the stream is a terminal. Existing root
    handlers are replaced; uvicorn's loggers are made to propagate to the root. Returns
    the installed handler. Calling it again replaces the previous configuration.

    With ``batch_access_log`` (the default), the access-log lines of requests that end
    in one event-loop iteration are written together at its end, when the stream is a
    file or pipe; ``False`` writes each line as its request ends.

    With ``capture_process``, warnings and uncaught exceptions of any thread become
    events of this pipeline too (`safeship.observe._capture.capture_process_output`):
    for a process whose every line must be structured, such as ``safeship serve``.
    """
    global _configured
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"fmt must be 'auto', 'json' or 'console', got {fmt!r}")
    out = stream if stream is not None else sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not _isatty(out))
    active_masker = (masker or PiiMasker()) if mask else None
    handler = _LineHandler(out, batch=batch_access_log)
    handler.setFormatter(_formatter(json_lines, active_masker, _isatty(out)))
    if sample_rates:
        handler.addFilter(SamplingFilter(sample_rates))
    setattr(handler, _HANDLER_MARK, True)
    _install_root(handler, level)
    _route_library_loggers(loggers or {})
    _configure_structlog()
    if capture_process:
        from safeship.observe._capture import capture_process_output

        capture_process_output()
    _configured = True
    return handler


def is_configured() -> bool:
    """Whether `configure_logging` ran in this process."""
    return _configured


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's `ProcessorFormatter` ending in ``renderer``, the one JSON step.

    A record of safeship's own `Logger` carries its event dict, fresh and complete, as
    its message: it goes to the renderer as it is, without the copy of the record and
    the pass through `logging.Formatter.format` that would only return the line. Every
    other record takes structlog's path (its pre-chain, then the same renderer).
    """

    def __init__(self, renderer: JsonLineRenderer, **kwargs: Any) -> None:
        super().__init__(processors=[renderer], **kwargs)
        self.renderer = renderer

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg
        if type(event) is not _EventDict or record.stack_info:
            return super().format(record)
        method: str = getattr(record, "_name", "") or record.levelname.lower()
        return self.renderer.render(event, method, record.name, record.created)


def _formatter(
    json_lines: bool, masker: PiiMasker | None, colors: bool
) -> structlog.stdlib.ProcessorFormatter:
    # Added after masking: safeship makes these values, they carry no PII.
    timestamper = UtcTimestamper()
    foreign_pre_chain: list[Any] = [
        # The fields a stdlib call passed as ``extra={...}``.
        structlog.stdlib.ExtraAdder(),
        drop_terminal_fields,
        structlog.contextvars.merge_contextvars,
        add_request_id,
        count_foreign_alerts,
    ]
    if json_lines:
        # One processor for the whole JSON step: level, logger, exception, masking,
        # timestamp, trace ids and the encoding, with recurring clean fields cached.
        renderer = JsonLineRenderer(masker, timestamper, add_trace_context)
        return _JsonFormatter(renderer, foreign_pre_chain=foreign_pre_chain)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_pre_chain,
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([masker] if masker is not None else []),
            timestamper,
            add_trace_context,
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
    )


def _install_root(handler: logging.Handler, level: int | str) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if getattr(old, _HANDLER_MARK, False):
            old.close()
    root.addHandler(handler)
    root.setLevel(level)


def _route_library_loggers(levels: Mapping[str, int | str]) -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
