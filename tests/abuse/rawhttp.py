"""HTTP/1.1 by hand, for what clients will not send: a declared body never sent, a body
streamed until the server answers, headers in any order."""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass

CHUNK = b"a" * 65536
ANSWER_TIMEOUT = 15.0


@dataclass(frozen=True)
class RawAnswer:
    status: int | None  # None: no answer (closed, or nothing before the timeout)
    head: bytes
    sent: int  # body bytes the server took before it answered or closed


def _head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    return int(parts[1])


def _read_head(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    return data


def declared_but_not_sent(
    port: int, method: str, path: str, *, length: int, headers: dict[str, str] | None = None
) -> RawAnswer:
    """Declare a ``length``-byte body, send none of it, and wait for the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        all_headers["Content-Length"] = str(length)
        sock.sendall(_head(method, path, port, all_headers))
        head = _read_head(sock, ANSWER_TIMEOUT)
    return RawAnswer(_status(head), head, 0)


def streamed(
    port: int,
    method: str,
    path: str,
    *,
    total: int,
    chunked: bool,
    headers: dict[str, str] | None = None,
) -> RawAnswer:
    """Stream up to ``total`` body bytes, stopping as soon as the server answers or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        all_headers = dict(headers or {})
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
        else:
            all_headers["Content-Length"] = str(total)
        sock.sendall(_head(method, path, port, all_headers))
        sent = _send_until_answered(sock, total, chunked)
        head = _read_head(sock, ANSWER_TIMEOUT)
    return RawAnswer(_status(head), head, sent)


def _send_until_answered(sock: socket.socket, total: int, chunked: bool) -> int:
    sent = 0
    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:  # the server answered (or closed) before the body ended
            return sent
        try:
            sock.sendall(frame)
        except OSError:
            return sent
        sent += len(CHUNK)
    if chunked:
        with contextlib.suppress(OSError):
            sock.sendall(b"0\r\n\r\n")
    return sent
