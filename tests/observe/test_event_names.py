"""safeship's own log lines: a constant event name, the data as fields.

Walks every module of the package and fails on a logging call whose message is not a
constant dotted event name (``slice.what_happened``), carries printf arguments, or is built
at run time (f-string, concatenation, ``%``). Data belongs in ``extra={...}``, where the
JSON renderer keeps it as fields and the masker sees each value on its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import safeship

LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
PACKAGE = Path(safeship.__file__).parent


def _logging_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        receiver = node.func.value
        name = str(getattr(receiver, "id", None) or getattr(receiver, "attr", ""))
        if node.func.attr in LEVELS and "log" in name.lower():
            calls.append(node)
    return calls


def _problem(call: ast.Call) -> str | None:
    args = (
        call.args[1:]
        if isinstance(call.func, ast.Attribute) and call.func.attr == "log"
        else call.args
    )
    if not args:
        return None
    event = args[0]
    if isinstance(event, ast.Attribute) and "event" in event.attr:
        return None  # an event name chosen once, at construction (e.g. an outage logger's)
    if not isinstance(event, ast.Constant) or not isinstance(event.value, str):
        return f"event built at run time: {ast.unparse(event)[:60]}"
    if not EVENT.match(event.value):
        return f"not a dotted event name: {event.value!r}"
    if len(args) > 1:
        return f"printf arguments after {event.value!r}: pass them in extra="
    return None


def test_every_log_call_of_the_package_has_a_constant_event_name_and_no_printf_arguments() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _logging_calls(ast.parse(path.read_text(encoding="utf-8"))):
            problem = _problem(call)
            if problem:
                found.append(f"{path.relative_to(PACKAGE)}:{call.lineno}: {problem}")
    assert found == []


def test_the_check_catches_printf_and_formatted_events() -> None:
    source = (
        'logger.warning("server.auth_failed client=%s", ip)\n'
        'log.info(f"flags.degraded {version}")\n'
        'logger.info("rollout.rolled_back rollout=x")\n'
        'logger.info("outbox.relay.started", extra={"relay": 1})\n'
    )
    problems = [_problem(call) for call in _logging_calls(ast.parse(source))]
    assert [p is not None for p in problems] == [True, True, True, False]
