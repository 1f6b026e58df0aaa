"""A TCP proxy that can *freeze*: stop forwarding bytes without closing anything, as a
paused (SIGSTOPped, or stalled-I/O) database looks to its clients; ``thaw()`` resumes."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.tcp_proxy import TcpProxy


class FreezeProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        self._flowing = threading.Event()
        self._flowing.set()
        super().__init__(target_host, target_port)

    def freeze(self) -> None:
        """Hold every byte in flight (both ways); connections stay open, new ones hang."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # a byte read just before the freeze waits too
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
