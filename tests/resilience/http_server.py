"""A local HTTP server that misbehaves on demand, for the httpx preset tests."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Misbehaving(ThreadingHTTPServer):
    """A local HTTP server that answers, fails, stalls and returns 4xx/5xx on demand.

    Paths: ``/ok``, ``/status/<code>`` (``?retry_after=<s>`` adds the header),
    ``/stall?seconds=<s>`` (released at teardown), ``/drop`` (closes the connection
    without answering), ``/flaky/<n>`` (503 for the first n requests, then 200).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client gave up on a stalled answer (that is the point)."""

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: Misbehaving
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = [part for part in url.path.split("/") if part]
        with self.server.lock:
            self.server.hits[url.path] += 1
            hits = self.server.hits[url.path]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if parts == ["ok"]:
            self._answer(200, b"ok")
        elif parts[:1] == ["status"]:
            headers = {"Retry-After": query["retry_after"][0]} if "retry_after" in query else {}
            self._answer(int(parts[1]), b"status", headers)
        elif parts == ["stall"]:
            self.server.release.wait(float(query.get("seconds", ["5"])[0]))
            self._answer(200, b"late")
        elif parts == ["drop"]:
            self.close_connection = True
            self.connection.close()
        elif parts[:1] == ["flaky"]:
            self._answer(503 if hits <= int(parts[1]) else 200, b"flaky")
        else:
            self._answer(404, b"no such route")

    do_GET = _route  # noqa: N815 - http.server dispatches on this name
    do_POST = _route  # noqa: N815 - http.server dispatches on this name
