"""Raw HTTP/1.1 over a socket, for requests httpx will not send: a body far larger than
what is really sent, or a chunked body streamed until the server answers."""

from __future__ import annotations

import contextlib
import select
import socket

CHUNK = 64 * 1024


def _head(method: str, path: str, framing: str, extra: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", framing]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(sock: socket.socket) -> int:
    """The status code of the response on ``sock`` (0 when the server closed without one)."""
    received = b""
    while b"\r\n" not in received:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    parts = received.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def declared_body(
    port: int,
    path: str,
    *,
    method: str = "POST",
    declared: int = 200_000_000,
    sent: int = CHUNK,
    headers: dict[str, str] | None = None,
) -> int:
    """Declare a ``declared``-byte body, send ``sent`` bytes of it, return the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_head(method, path, f"Content-Length: {declared}", headers or {}))
        with contextlib.suppress(OSError):  # the server may answer and close at once
            sock.sendall(b"x" * sent)
        return status_of(sock)


def chunked_body(
    port: int, path: str, *, most: int, headers: dict[str, str] | None = None
) -> tuple[int, int]:
    """Stream a chunked body until the server answers (or ``most`` bytes were sent):
    the status and how many body bytes went out before the answer."""
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b"y" * CHUNK)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_head("POST", path, "Transfer-Encoding: chunked", headers or {}))
        while sent < most:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable or not writable:
                break  # the server answered (or stopped reading): stop sending
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += CHUNK
        return status_of(sock), sent
