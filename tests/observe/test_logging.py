"""Structured logging: JSON lines, context, alert level, masking, sampling."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from safeship.observe._logging import (
    ALERT,
    SamplingFilter,
    bind_context,
    bound_context,
    clear_context,
    configure_logging,
    get_logger,
    note_request_id,
    request_id,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Configure JSON logging into a buffer, then restore the root logger."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    # An in-process uvicorn (the browser tests') leaves levels on its loggers: start clean.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    buffer = io.StringIO()
    configure_logging(fmt="json", level="DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        clear_context()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        structlog.reset_defaults()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_alert_level_is_registered() -> None:
    assert ALERT == 45
    assert logging.getLevelName(ALERT) == "ALERT"


def test_import_configures_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import logging, safeship.observe, safeship.web;"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_events_render_as_json_with_level_logger_and_time(stream: io.StringIO) -> None:
    get_logger("app.orders").info("order.placed", order_id=7)
    (line,) = lines(stream)
    assert line["event"] == "order.placed"
    assert line["order_id"] == 7
    assert line["level"] == "info"
    assert line["logger"] == "app.orders"
    assert str(line["timestamp"]).endswith("Z")


def test_stdlib_records_go_through_the_same_pipeline(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 12)
    (line,) = lines(stream)
    assert line["event"] == "Started server process [12]"
    assert line["level"] == "warning"
    assert line["logger"] == "uvicorn.error"


def test_structlog_native_loggers_are_routed_too(stream: io.StringIO) -> None:
    structlog.get_logger("native").info("native.event", n=1)
    (line,) = lines(stream)
    assert line["event"] == "native.event"
    assert line["n"] == 1


def test_context_and_request_id_are_added(stream: io.StringIO) -> None:
    token = request_id.set("rid-1")
    try:
        bind_context(tenant_id="t1")
        with bound_context(operation="checkout"):
            get_logger("app").info("step")
            logging.getLogger("lib").info("foreign")
        get_logger("app").info("after")
    finally:
        request_id.reset(token)
    first, foreign, after = lines(stream)
    assert first["request_id"] == "rid-1"
    assert first["tenant_id"] == "t1"
    assert first["operation"] == "checkout"
    assert foreign["request_id"] == "rid-1"
    assert foreign["operation"] == "checkout"
    assert "operation" not in after


def test_bound_logger_keeps_its_fields(stream: io.StringIO) -> None:
    get_logger("app").bind(user_id="u1").warning("slow", duration_ms=1200)
    (line,) = lines(stream)
    assert line["user_id"] == "u1"
    assert line["duration_ms"] == 1200


def alerts(logger: str) -> float:
    return REGISTRY.get_sample_value("safeship_log_alerts_total", {"logger": logger}) or 0.0


def test_alert_is_logged_and_counted(stream: io.StringIO) -> None:
    before = alerts("app.guard")
    get_logger("app.guard").alert("rollout.rolled_back", flag="checkout-v2")
    (line,) = lines(stream)
    assert line["level"] == "alert"
    assert alerts("app.guard") == before + 1


def test_foreign_alert_records_are_counted(stream: io.StringIO) -> None:
    before = alerts("other.lib")
    logging.getLogger("other.lib").log(ALERT, "disk almost full")
    assert alerts("other.lib") == before + 1
    assert lines(stream)[0]["level"] == "alert"


def test_alert_counts_without_configuration() -> None:
    before = alerts("unconfigured")
    get_logger("unconfigured").alert("x")
    assert alerts("unconfigured") == before + 1


def test_secrets_are_masked_in_output(stream: io.StringIO) -> None:
    get_logger("app").info(
        "login for bob@example.com",
        password="hunter2",
        headers={"Authorization": "Bearer abcdefghijkl"},
        note="card 4111 1111 1111 1111",
    )
    text = stream.getvalue()
    for secret in ("hunter2", "abcdefghijkl", "bob@example.com", "4111 1111 1111 1111"):
        assert secret not in text


def test_exception_traceback_is_rendered(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("app").exception("failed")
    (line,) = lines(stream)
    assert "ValueError: boom" in str(line["exception"])


def test_debug_is_skipped_below_level(stream: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.INFO)
    get_logger("app").debug("noise")
    assert lines(stream) == []


def test_sampling_drops_routine_events_but_never_warnings() -> None:
    draws = iter([0.5, 0.005, 0.5])
    sampler = SamplingFilter({"cache.hit": 0.01}, rng=lambda: next(draws))

    def record(level: int, msg: object) -> logging.LogRecord:
        return logging.LogRecord("x", level, __file__, 1, msg, None, None)

    assert not sampler.filter(record(logging.INFO, {"event": "cache.hit"}))
    assert sampler.filter(record(logging.INFO, {"event": "cache.hit"}))
    assert sampler.filter(record(logging.WARNING, {"event": "cache.hit"}))
    assert sampler.filter(record(logging.INFO, {"event": "order.placed"}))
    assert not sampler.filter(record(logging.DEBUG, "cache.hit"))


def test_sampling_rate_is_validated() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        SamplingFilter({"x": 2.0})


def test_configure_logging_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="fmt"):
        configure_logging(fmt="xml")  # type: ignore[arg-type]


def test_unconfigured_records_read_as_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="plain"):
        get_logger("plain").info("order.placed", order_id=3)
    assert caplog.records[0].getMessage() == "order.placed order_id=3"


def test_safeship_stdlib_alerts_count_once_configured_or_not(stream: io.StringIO) -> None:
    before = alerts("safeship.resilience")
    logging.getLogger("safeship.resilience").log(ALERT, "breaker.opened")
    get_logger("safeship.resilience").alert("breaker.opened")
    assert alerts("safeship.resilience") == before + 2


def test_safeship_stdlib_alerts_count_without_configuration() -> None:
    before = alerts("safeship.guard")
    logging.getLogger("safeship.guard").log(ALERT, "rollout.rolled_back")
    assert alerts("safeship.guard") == before + 1


def test_console_format_is_readable_and_masked() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    try:
        configure_logging(fmt="console", stream=buffer)
        get_logger("app").info("order.placed", order_id=5, email="a@example.com")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        structlog.reset_defaults()
    text = buffer.getvalue()
    assert "order.placed" in text
    assert "order_id" in text
    assert "a@example.com" not in text
    assert not text.lstrip().startswith("{")


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    second = io.StringIO()
    configure_logging(fmt="json", stream=second)
    get_logger("app").info("once")
    assert stream.getvalue() == ""
    assert len(lines(second)) == 1


def test_event_logs_a_dict_of_fields_and_counts_alerts(caplog: pytest.LogCaptureFixture) -> None:
    from safeship.observe._logging import ALERT
    from safeship.observe._metrics import LOG_ALERTS

    log = get_logger("app.fields")
    before = LOG_ALERTS.labels("app.fields")._value.get()
    with caplog.at_level(logging.INFO, logger="app.fields"):
        log.event(logging.INFO, "order.placed", {"order_id": 7})
        log.event(ALERT, "order.stuck", {"order_id": 8})
    assert [(r.msg["event"], r.msg["order_id"]) for r in caplog.records] == [  # type: ignore[index]
        ("order.placed", 7),
        ("order.stuck", 8),
    ]
    assert LOG_ALERTS.labels("app.fields")._value.get() == before + 1


CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"


def test_stdlib_extra_fields_are_rendered_and_masked(stream: io.StringIO) -> None:
    logging.getLogger("app.orders").warning(
        "order.refused", extra={"order_id": 7, "customer": f"mail {EMAIL}"}
    )
    (line,) = lines(stream)
    assert line["event"] == "order.refused" and line["order_id"] == 7
    assert line["customer"] == "mail ***"


def test_an_escaped_exception_carries_its_request_id_to_the_servers_line(
    stream: io.StringIO,
) -> None:
    error = RuntimeError("boom")
    note_request_id(error, "req-inner")
    note_request_id(error, "req-outer")  # the innermost request's id is kept
    logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=error)
    (line,) = lines(stream)
    assert line["request_id"] == "req-inner" and "RuntimeError: boom" in str(line["exception"])


def _run_python(code: str, tmp_path: Path, timeout: float = 60) -> list[str]:
    """Run ``code`` in a fresh interpreter; every non-empty line it wrote (stdout, stderr)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def _json_objects(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n" + "\n".join(lines))
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def test_capture_process_makes_warnings_and_uncaught_exceptions_masked_json(
    tmp_path: Path,
) -> None:
    output = _run_python(
        f"""
        import sys, threading, warnings
        from safeship.observe._logging import configure_logging
        configure_logging(fmt="json", capture_process=True)
        warnings.warn("deprecated for {EMAIL}")
        worker = threading.Thread(target=lambda: 1 / 0, name="worker")
        worker.start(); worker.join()
        class Leaky:
            def __del__(self):
                raise ValueError("closing {CARD}")
        Leaky()
        raise RuntimeError("charge {CARD} for {EMAIL}")
        """,
        tmp_path,
    )
    events = {e["event"]: e for e in _json_objects(output)}
    assert CARD not in "\n".join(output) and EMAIL not in "\n".join(output)
    warning = events["process.warning"]
    assert warning["category"] == "UserWarning" and warning["warning"] == "deprecated for ***"
    assert events["process.thread_exception"]["thread_name"] == "worker"
    assert "ValueError: closing ***" in events["process.unraisable_exception"]["exception"]
    uncaught = events["process.uncaught_exception"]
    assert uncaught["level"] == "critical"
    assert "RuntimeError: charge *** for ***" in uncaught["exception"]


def test_uvicorn_log_config_makes_a_protected_apps_server_write_masked_json(
    tmp_path: Path,
) -> None:
    """``protect()`` under the user's own uvicorn: its error and access loggers and the
    traceback of an exception the app did not handle are masked JSON, with the request id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import uvicorn
            from starlette.applications import Starlette
            from starlette.routing import Route
            from safeship.observe import uvicorn_log_config
            from safeship.web import protect

            async def boom(request):
                raise RuntimeError("charge {CARD} for {EMAIL}")

            app = protect(Starlette(routes=[Route("/boom", boom)]), configure_logs=False)
            uvicorn.run(app, host="127.0.0.1", port={port}, log_config=uvicorn_log_config())
            """
        )
    )
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        server = subprocess.Popen([sys.executable, str(script)], stdout=stdout, stderr=stderr)
    try:
        _wait_answering(f"http://127.0.0.1:{port}/boom", server)
        response = httpx.get(
            f"http://127.0.0.1:{port}/boom", headers={"X-Request-ID": "req-boom"}, timeout=30
        )
        assert response.status_code == 500
    finally:
        server.terminate()
        server.wait(30)
    output = [
        line
        for path in (out, err)
        for line in path.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    events = _json_objects(output)
    assert CARD not in "\n".join(output) and EMAIL not in "\n".join(output)
    [traceback] = [e for e in events if e["event"].startswith("Exception in ASGI application")]
    assert traceback["logger"] == "uvicorn.error" and traceback["request_id"] == "req-boom"
    assert "RuntimeError: charge *** for ***" in traceback["exception"]
    assert any(e["logger"] == "uvicorn.error" and e["level"] == "info" for e in events)
    assert not any("color_message" in e for e in events)  # terminal-only text is dropped


def _wait_answering(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            httpx.get(url.replace("/boom", "/livez"), timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(url)
