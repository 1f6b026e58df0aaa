"""protect_wsgi, the Flask extension and the Django integration under their real servers:
gunicorn for each (plain WSGI, Flask, Django's WSGI application) and Django's test client."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.served import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "ss_reach_key_for_tests_only_0123456789"


@contextlib.contextmanager
def gunicorn(target: str, tmp_path: Path, *extra: str) -> Iterator[tuple[str, Path]]:
    """``gunicorn target`` on a free port (2 workers, preloaded); its stderr file."""
    port = free_port()
    err = tmp_path / "gunicorn.err"
    env = {**os.environ, "REACH_KEY": KEY, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2",
        "--preload", "--graceful-timeout", "5", *extra, target,
    ]  # fmt: skip
    with (
        err.open("wb") as stderr,
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=stderr, stderr=stderr) as process,
    ):
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, err.read_text()
                try:
                    httpx.get(url + "/livez", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, err.read_text()
                    time.sleep(0.1)
            yield url, err
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def json_lines(path: Path) -> list[dict[str, object]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                found.append(record)
    return found


def eventually_logged(path: Path, event: str, timeout: float = 5.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in json_lines(path) if r.get("event") == event]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def check_guards(url: str, *, protected: str, open_path: str) -> None:
    """The same guards as the ASGI protect(): ids, key auth, body limit, probes, metrics."""
    with httpx.Client(timeout=10) as http:
        _check_guards(http, url, protected=protected, open_path=open_path)


def _check_guards(http: httpx.Client, url: str, *, protected: str, open_path: str) -> None:
    given = http.get(url + open_path, headers={"X-Request-ID": "trace-42"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42"
    made = http.get(url + open_path)
    assert len(made.headers["x-request-id"]) == 32
    assert http.get(url + protected).status_code == 401
    assert http.get(url + protected, headers={"X-API-Key": "ss_wrong"}).status_code == 401
    assert http.get(url + protected, headers={"X-API-Key": KEY}).status_code == 200
    assert http.post(url + open_path, content=b"x" * 4096).status_code == 413
    assert http.get(url + "/readyz").json()["status"] == "pass"
    assert "safeship_http_requests_total" in http.get(url + "/metrics").text


def test_plain_wsgi_app_is_protected_under_gunicorn(tmp_path: Path) -> None:
    with gunicorn("tests.reach.apps.wsgi_plain:app", tmp_path) as (url, err):
        check_guards(url, protected="/api/thing", open_path="/hello")
        assert httpx.post(url + "/hello", content=b"abc").text == "hello /hello 3"
        httpx.get(url + "/hello", headers={"X-Request-ID": "log-me-7"})
        app_lines = eventually_logged(err, "app.hello")
        assert any(line.get("request_id") == "log-me-7" for line in app_lines), app_lines
        access = eventually_logged(err, "http.request")
        assert any(line.get("request_id") == "log-me-7" for line in access), access


def test_flask_app_is_protected_by_the_extension_under_gunicorn(tmp_path: Path) -> None:
    with gunicorn("tests.reach.apps.flask_app:app", tmp_path) as (url, err):
        check_guards(url, protected="/api/secret", open_path="/hello")
        body = httpx.get(url + "/hello", headers={"X-Request-ID": "flask-1"}).json()
        assert body == {"hello": "flask", "request_id": "flask-1"}
        assert any(r.get("request_id") == "flask-1" for r in eventually_logged(err, "app.hello"))


def test_django_application_is_protected_under_gunicorn(tmp_path: Path) -> None:
    target = "tests.reach.apps.django_site.wsgi:application"
    with gunicorn(target, tmp_path) as (url, _):
        check_guards(url, protected="/admin/panel", open_path="/hello")
        body = httpx.get(url + "/hello", headers={"X-Request-ID": "dj-9"}).json()
        assert body == {"hello": "django", "request_id": "dj-9"}


def _django_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.reach.apps.django_site.settings"}  # fmt: skip


def test_django_test_client_gets_request_ids_from_the_middleware() -> None:
    """Under Django's test client (no WSGI wrapper) the middleware applies the same id rules."""
    code = (
        "import django, json; django.setup(); from django.test import Client; c = Client();"
        "a = c.get('/hello', HTTP_X_REQUEST_ID='client-5');"
        "b = c.get('/hello', HTTP_X_REQUEST_ID='bad id\\nwith newline');"
        "print(json.dumps([a.json(), a['X-Request-ID'], b['X-Request-ID']]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_django_env(), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    body, echoed, replaced = json.loads(result.stdout.strip().splitlines()[-1])
    assert body == {"hello": "django", "request_id": "client-5"} and echoed == "client-5"
    assert len(replaced) == 32 and "\n" not in replaced


@pytest.mark.parametrize(
    ("settings_value", "ok"), [(None, True), ("{'max_body_bytes': -5}", False)]
)
def test_django_safeship_check_command_validates_settings(
    tmp_path: Path, settings_value: str | None, ok: bool
) -> None:
    env = _django_env()
    if settings_value is not None:
        module = tmp_path / "bad_settings.py"
        module.write_text(
            f"from tests.reach.apps.django_site.settings import *\nSAFESHIP = {settings_value}\n"
        )
        env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
        env["DJANGO_SETTINGS_MODULE"] = "bad_settings"
    result = subprocess.run(
        [sys.executable, "-m", "django", "safeship_check"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode == 0) is ok, result.stderr
    if ok:
        assert "protected application builds" in result.stdout
    else:
        assert "settings.SAFESHIP is invalid" in result.stderr
