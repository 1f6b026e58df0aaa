"""``safeship serve`` in production: every line it writes is masked JSON, tracebacks included."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import httpx
import sqlalchemy as sa

from safeship.db import create_engine, upgrade
from tests.server.served import production_env, serve
from tests.server.support import admin_headers

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
PERSONAL = f"card {CARD} mail {EMAIL}"
REQUEST_ID = "req-unhandled-1"


def _plant_fault(database_url: str) -> tuple[str, str, dict[str, object] | None]:
    """Make one request fail with an exception no handler answers, whose text holds
    ``PERSONAL``; return that request (method, path, JSON body)."""
    engine = create_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # XX000 (internal_error): a driver error no handler maps to an answer.
                conn.execute(
                    sa.text(
                        "CREATE FUNCTION refuse_flag() RETURNS trigger LANGUAGE plpgsql AS $$ "
                        "BEGIN RAISE EXCEPTION 'refused %', NEW.description "
                        "USING ERRCODE = 'XX000'; END $$"
                    )
                )
                conn.execute(
                    sa.text(
                        "CREATE TRIGGER refuse_flag BEFORE INSERT ON safeship_flags "
                        "FOR EACH ROW EXECUTE FUNCTION refuse_flag()"
                    )
                )
                return "POST", "/api/v1/flags", {"name": "pii-flag", "description": PERSONAL}
            # SQLite stores any text in a DATETIME column: reading it back raises a
            # ValueError naming the value.
            conn.execute(
                sa.text(
                    "INSERT INTO safeship_audit (at, actor, action, target) "
                    "VALUES (:at, 'ops', 'flag.enable', 'flag:x')"
                ),
                {"at": PERSONAL},
            )
            return "GET", "/api/v1/audit", None
    finally:
        engine.dispose()


def _send_garbage(port: int) -> None:
    """Bytes that are no HTTP request: uvicorn's own logger warns about them."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        with contextlib.suppress(OSError):
            conn.recv(1024)


def test_served_plane_writes_only_masked_json_lines_with_the_request_id(
    database_url: str, tmp_path: Path
) -> None:
    method, path, body = _plant_fault(database_url)
    with serve(production_env(database_url), tmp_path / "logs") as served:
        response = httpx.request(
            method,
            served.url + path,
            json=body,
            headers={**admin_headers(), "X-Request-ID": REQUEST_ID},
            timeout=30,
        )
        _send_garbage(served.port)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == REQUEST_ID
    assert response.json()["request_id"] == REQUEST_ID
    assert CARD not in response.text and EMAIL not in response.text

    lines = served.lines()
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not_json == [], "\n".join(not_json[:20])
    output = "\n".join(lines)
    assert CARD not in output and "4111111111111111" not in output
    assert EMAIL not in output
    events = [json.loads(line) for line in lines]
    [error] = [e for e in events if e["event"] == "server.unhandled_error"]
    assert error["request_id"] == REQUEST_ID
    assert error["path"] == path and error["level"] == "error"
    assert "Traceback" in error["exception"] and "***" in error["exception"]
    access = [e for e in events if e.get("request_id") == REQUEST_ID and e is not error]
    assert access and access[0].get("status") == 500
    assert any(e["logger"].startswith("uvicorn") for e in events), "uvicorn's line is missing"


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
