"""What the served control plane writes: JSON lines only (its own, uvicorn's and every
traceback), card numbers and e-mail addresses masked, request ids on request lines."""

from __future__ import annotations

import json

from tests.abuse.concurrency import at_once
from tests.abuse.plane import Plane, not_json_lines
from tests.server.support import admin_headers

CARD = "4111111111111111"
CARD_SPACED = "4111 1111 1111 1111"
EMAIL = "alice.pii@example.com"
PII = f"card {CARD_SPACED} mail {EMAIL}"


def _stir(plane: Plane) -> None:
    """Requests that put personal data where a log line or a traceback could pick it up."""
    with plane.admin() as admin:
        admin.post("/api/v1/flags", json={"name": "logs-pii", "description": PII})
        admin.post("/api/v1/flags", json={"name": "logs-nul", "description": PII + "\x00"})
        admin.get(f"/api/v1/flags/{CARD}")
        admin.get("/api/v1/audit", params={"target": EMAIL})
        admin.post("/api/v1/flags/logs-pii/target", json={"values": [EMAIL, CARD]})
        admin.get("/api/v1/me", headers={"X-API-Key": f"{CARD}{EMAIL}"})
        admin.post(
            "/api/v1/flags/logs-pii/schedule", json={"enable_at": "0001-01-01T00:00:00+14:00"}
        )
    race = {"name": "logs-race", "description": PII, "owner": EMAIL}
    at_once(plane.url, admin_headers(), [lambda c: c.post("/api/v1/flags", json=race)] * 10)


def test_every_line_the_server_writes_is_json_with_personal_data_masked(plane: Plane) -> None:
    mark = plane.log_size()
    _stir(plane)
    with plane.admin() as admin:  # one more request, so the batched access lines are out
        admin.get("/health")
    lines = plane.lines_since(mark)
    assert lines, "the requests were logged"
    bad = not_json_lines(lines)
    assert not bad, f"{len(bad)} of {len(lines)} lines are not JSON, e.g.:\n" + "\n".join(bad[:8])
    leaked = [line for line in lines if CARD in line or CARD_SPACED in line or EMAIL in line]
    assert not leaked, "personal data in the log:\n" + "\n".join(leaked[:5])
    for line in lines:
        event = json.loads(line)
        if event.get("logger") == "safeship.access" or event.get("level") == "error":
            assert event.get("request_id"), f"no request id: {line}"


def test_the_server_wrote_only_json_lines_since_it_started(plane: Plane) -> None:
    lines = plane.lines_since()
    bad = not_json_lines(lines)
    assert not bad, f"{len(bad)} of {len(lines)} lines are not JSON, e.g.:\n" + "\n".join(bad[:8])
