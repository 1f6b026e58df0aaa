"""Django's own ``manage.py runserver --noreload`` serving the site behind safeship
(``WSGI_APPLICATION`` points at the protected application): the guards, request ids in the
app's log lines, probes and metrics, then a clean exit on SIGINT and on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.reach.test_frameworks import KEY, ROOT, check_guards, eventually_logged
from tests.server.served import free_port

MANAGE = ROOT / "tests" / "reach" / "apps" / "manage.py"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_runserver_serves_the_protected_site_and_exits_cleanly(
    tmp_path: Path, stop: signal.Signals
) -> None:
    port = free_port()
    log = tmp_path / "runserver.log"
    env = {**os.environ, "REACH_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"]
    with (
        log.open("wb") as out,
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out) as process,
    ):
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    httpx.get(url + "/livez", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            check_guards(url, protected="/admin/panel", open_path="/hello")
            body = httpx.get(url + "/hello", headers={"X-Request-ID": "rs-77"}).json()
            assert body == {"hello": "django", "request_id": "rs-77"}
            app_lines = eventually_logged(log, "app.hello")
            assert any(line.get("request_id") == "rs-77" for line in app_lines), app_lines
            access = eventually_logged(log, "http.request")
            assert any(
                line.get("request_id") == "rs-77" and line.get("status") == 200 for line in access
            ), access
            denied = [r for r in access if r.get("path") == "/admin/panel"]
            assert {r.get("status") for r in denied} >= {401, 200}, denied
        finally:
            process.send_signal(stop)
            try:
                code = process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert code == 0, (code, log.read_text())
