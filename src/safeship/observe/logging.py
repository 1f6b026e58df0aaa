"""Structured logging on structlog, routed through stdlib ``logging``.

safeship's own modules log through stdlib loggers with stable event names and never
configure logging on import. `configure_logging` (called by the application, and by
`safeship.web.protect` when nothing else configured logging) renders every record —
safeship's, uvicorn's, SQLAlchemy's — as one JSON line, or readable colour output in
development, with request id, trace id and bound context added and PII masked.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
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

from safeship.observe.masking import PiiMasker
from safeship.observe.metrics import LOG_ALERTS
from safeship.observe.rendering import JsonLineRenderer, UtcTimestamper, render_json

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

    def json_line_sink(self, level: int) -> tuple[_LineHandler, JsonLineRenderer] | None:
        """The handler and renderer that alone would turn an event at ``level`` into a
        JSON line, or None when anything else in the logging configuration would see it.

        For hot events of fixed keys (the access log) that render their line themselves
        with the renderer's `JsonLineRenderer.field`, exactly as the renderer would.
        """
        logger = self._logger
        if not logger.isEnabledFor(level):
            return None
        handler = _sole_line_handler(logger, level)
        if handler is None:
            return None
        renderer = handler.json_renderer()
        return None if renderer is None else (handler, renderer)

    def _emit(self, level: int, event: str, kv: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        exc_info = kv.pop("exc_info", None)
        data = _EventDict(event=event)
        data.update(get_contextvars())
        rid = request_id.get()
        if rid is not None:
            data.setdefault("request_id", rid)
        data.update(self._context)
        data.update(kv)
        if exc_info:
            exc_info = sys.exc_info() if exc_info is True else exc_info
            data["exc_info"] = exc_info
        name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
        sole = _sole_line_handler(self._logger, level)
        if sole is not None:
            sole.write_event(self._logger, level, data, exc_info or None, name)
            return
        # A record made directly and passed to handle() skips the caller lookup of
        # Logger.log: the stable event name already says where an event comes from.
        self._logger.handle(_make_record(self._logger, level, data, exc_info or None, name))


_LogRecord = logging.LogRecord
#: Per logger, level and thread: the fields of a LogRecord that do not change between
#: events (level name, process, thread, the empty source location).
_record_fields: dict[tuple[str, int, int], dict[str, Any]] = {}
_RECORD_FIELDS_MAX = 1024


def _make_record(
    logger: logging.Logger, level: int, msg: Any, exc_info: Any, method: str
) -> logging.LogRecord:
    """The LogRecord ``logger.makeRecord`` would make, built from cached fields.

    Only the time, message and exception differ between events of one logger, level and
    thread, so the rest is copied instead of recomputed. ``method`` is the level's name
    for structlog's formatter. A custom record factory (`logging.setLogRecordFactory`)
    is always honoured through ``makeRecord``.
    """
    if logging.getLogRecordFactory() is not _LogRecord:
        made = logger.makeRecord(logger.name, level, "", 0, msg, (), exc_info)
        made._logger = logger  # what structlog's ProcessorFormatter reads
        made._name = method
        return made
    key = (logger.name, level, get_ident())
    fields = _record_fields.get(key)
    if fields is None:
        fields = _LogRecord(logger.name, level, "", 0, None, (), None).__dict__.copy()
        fields["_logger"] = logger
        fields["_name"] = method
        if len(_record_fields) >= _RECORD_FIELDS_MAX:
            _record_fields.clear()
        _record_fields[key] = fields
    now = time.time()
    values = fields.copy()
    values["msg"] = msg
    values["exc_info"] = exc_info
    values["created"] = now
    values["msecs"] = int((now - int(now)) * 1000) + 0.0
    values["relativeCreated"] = (now - _LOGGING_STARTED) * 1000
    values["threadName"] = current_thread().name
    if "taskName" in fields:  # Python 3.12+: the running asyncio task's name
        values["taskName"] = _task_name()
    record: logging.LogRecord = _new_record(_LogRecord)
    record.__dict__ = values
    return record


_new_record = object.__new__
get_ident = threading.get_ident
current_thread = threading.current_thread
_LOGGING_STARTED: float = getattr(logging, "_startTime", time.time())
# A forked child has another process id (and name): its records start from fresh fields.
os.register_at_fork(after_in_child=_record_fields.clear)


LineMaker = Callable[..., str]


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes each line and flushes under the lock it already holds.

    `logging.StreamHandler.emit` takes the handler's lock a second time to flush; this
    writes the same text with one lock per record. Lines of the access log may be
    deferred (`defer`) to the end of the event-loop iteration and written together.
    """

    def __init__(self, stream: TextIO, *, batch: bool = True) -> None:
        super().__init__(stream)
        self.batch = batch
        self._deferred: list[tuple[LineMaker, tuple[Any, ...]]] = []
        self._flushing_loops: set[Any] = set()  # loops with a flush to come
        self._fd_stream: tuple[object, bool] = (None, False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)

    def _write(self, text: str) -> None:
        """Write ``text`` after any deferred lines, so the stream keeps the events' order.

        The caller holds the handler's lock.
        """
        if self._deferred:
            text = self._render_deferred() + text
        stream = self.stream
        stream.write(text)
        stream.flush()

    def write_event(
        self, logger: logging.Logger, level: int, event: _EventDict, exc_info: Any, method: str
    ) -> None:
        """Write an event of `Logger` as ``handle(record)`` would, without making the record.

        Only for the handler `_sole_line_handler` found: no filter and no other handler
        would see the record, so the line is all that the record would have become.
        """
        renderer = self.json_renderer()
        if renderer is None:
            self.handle(_make_record(logger, level, event, exc_info, method))
            return
        now = time.time()
        self.acquire()
        try:
            self._write(renderer(event, method, logger.name, now) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(_make_record(logger, level, event, exc_info, method))
        finally:
            self.release()

    def json_renderer(self) -> JsonLineRenderer | None:
        """The JSON renderer of this handler's formatter, when it is safeship's."""
        formatter = self.formatter
        return formatter._json_line if type(formatter) is _Formatter else None

    def defer(self, make: LineMaker, args: tuple[Any, ...], loop: Any = None) -> None:
        """Write the line ``make(*args)`` at the end of this event-loop iteration.

        Lines deferred in one iteration are rendered together and written with one
        write: rendering many lines in a row is cheaper than one at a time between
        requests. Anything else written through this handler first writes the deferred
        lines, and `flush` and `close` write them too (so `logging.shutdown` does at
        exit). With ``batch`` off, no running event loop, or a stream without a file
        descriptor (``io.StringIO``: nothing to save, and a test reads it at once), the
        line is written now. ``loop``, when given, is the running loop.
        """
        if not self.batch:
            loop = None
        elif loop is None:
            loop = _running_loop()
        seen, to_file = self._fd_stream
        if seen is not self.stream:
            to_file = self._to_file()
        if loop is None or not to_file:
            self.acquire()
            try:
                self._write(self._line(make, args))
            finally:
                self.release()
            return
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            self._deferred.append((make, args))
            # Each loop that queues a line flushes the queue: one stopped loop (or one
            # blocked in another thread) never holds back the lines of another.
            scheduled = loop in self._flushing_loops
            self._flushing_loops.add(loop)
        if not scheduled:
            loop.call_soon(self._flush_for, loop)

    def _flush_for(self, loop: Any) -> None:
        """Write the deferred lines (the end of an iteration of ``loop``)."""
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            self._flushing_loops.discard(loop)
            if self._deferred:  # else written already, by another write through here
                self._write_deferred()

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

    def _render_deferred(self) -> str:
        """The deferred lines as one text, emptying the queue (the caller holds the lock)."""
        pending, self._deferred = self._deferred, []
        self._flushing_loops.clear()  # the lines they would flush are written now
        lines = []
        terminator = self.terminator
        for make, args in pending:
            try:
                lines.append(make(*args) + terminator)
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
                self._report_line_error()
        return "".join(lines)

    def _line(self, make: LineMaker, args: tuple[Any, ...]) -> str:
        """The line ``make(*args)`` with its terminator; a failure is reported, not raised."""
        try:
            return make(*args) + self.terminator
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self._report_line_error()
            return ""

    def _report_line_error(self) -> None:
        self.handleError(logging.makeLogRecord({"msg": "access log line"}))  # no PII

    def flush(self) -> None:
        """Write the deferred lines, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
            self._write_deferred()

    def _write_deferred(self) -> None:
        """Write the deferred lines and flush the stream (the caller holds the lock);
        a failure is reported, not raised."""
        try:
            if self._deferred:
                self._write("")
            else:
                super().flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(logging.makeLogRecord({"msg": "deferred log lines"}))

    def close(self) -> None:
        """Write the deferred lines, then close as a StreamHandler does."""
        if self._deferred:
            self.flush()
        super().close()


def _running_loop() -> Any:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_STANDARD_HANDLE = logging.Logger.handle
_STANDARD_CALL_HANDLERS = logging.Logger.callHandlers


def _sole_line_handler(logger: logging.Logger, level: int) -> _LineHandler | None:
    """The safeship handler that alone would see a record of ``logger`` at ``level``.

    None unless the record's whole path through stdlib logging ends in one `_LineHandler`:
    no filter on the logger or that handler, no other handler at or below ``level`` on
    the way to the root, the standard record factory and `Logger.handle`. Anything a
    user adds to the logging configuration (a handler, a filter, pytest's ``caplog``)
    makes this None, and the event goes through ``logger.handle`` again.
    """
    cls = type(logger)
    if (
        logger.filters
        or logger.disabled
        or cls.handle is not _STANDARD_HANDLE
        or cls.callHandlers is not _STANDARD_CALL_HANDLERS
        # getLogRecordFactory()'s value, read without the call (a renamed one: None).
        or getattr(logging, "_logRecordFactory", None) is not _LogRecord
    ):
        return None
    sole = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level >= handler.level:
                if sole is not None or type(handler) is not _LineHandler or handler.filters:
                    return None
                sole = handler
        current = current.parent if current.propagate else None
    return sole


def _task_name() -> str | None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not getattr(logging, "logAsyncioTasks", True):
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return None if task is None else str(task.get_name())


def get_logger(name: str, **context: Any) -> Logger:
    """A structured logger writing to the stdlib logger ``name``."""
    return Logger(logging.getLogger(name), context)


#: structlog's context variables, one per key ever bound (its own registry, read only).
_BOUND_VARS = getattr(structlog.contextvars, "_CONTEXT_VARS", None)


def has_bound_context() -> bool:
    """Whether anything is bound (`bind_context`) in this context.

    Without a key ever bound there is nothing to copy out of the context, so this costs
    one check on services that bind nothing.
    """
    if type(_BOUND_VARS) is dict and not _BOUND_VARS:
        return False
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
    events of this pipeline too (`safeship.observe.capture.capture_process_output`):
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
        from safeship.observe.capture import capture_process_output

        capture_process_output()
    _configured = True
    return handler


def is_configured() -> bool:
    """Whether `configure_logging` ran in this process."""
    return _configured


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's `ProcessorFormatter` with a fast path for safeship's own `Logger`.

    Records made by `Logger` already carry a fresh event dict and no stdlib arguments,
    so they go straight through the processors: no copy of the record and no second
    pass through `logging.Formatter.format`, which would only return the rendered line.
    Every other record takes structlog's path unchanged.
    """

    def __init__(
        self, *args: Any, json_line: JsonLineRenderer | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._json_line = json_line

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg
        logger = record.__dict__.get("_logger")
        if type(event) is not _EventDict or logger is None or record.stack_info:
            return super().format(record)
        method: str = record.__dict__["_name"]
        if self._json_line is not None:
            return self._json_line(event, method, record.name, record.created)
        logger = self.logger or logger
        ed: Any = dict(event)
        ed["_record"] = record
        ed["_from_structlog"] = True
        for processor in self.processors:
            ed = processor(logger, method, ed)
        return str(ed)


def _formatter(
    json_lines: bool, masker: PiiMasker | None, colors: bool
) -> structlog.stdlib.ProcessorFormatter:
    enrich: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    ]
    renderer: Any
    if json_lines:
        enrich.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=render_json)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    if masker is not None:
        enrich.append(masker)
    # Added after masking: safeship makes these values, they carry no PII.
    timestamper = UtcTimestamper()
    enrich.append(timestamper)
    enrich.append(add_trace_context)
    return _Formatter(
        foreign_pre_chain=[
            # The fields a stdlib call passed as ``extra={...}``.
            structlog.stdlib.ExtraAdder(),
            drop_terminal_fields,
            structlog.contextvars.merge_contextvars,
            add_request_id,
            count_foreign_alerts,
        ],
        processors=[*enrich, renderer],
        json_line=JsonLineRenderer(masker, timestamper, add_trace_context) if json_lines else None,
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
