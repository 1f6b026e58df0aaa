"""Run a test app under a real uvicorn on 127.0.0.1 with an ephemeral port.

Usage: python serve.py MODULE:APP [--workers N]. The socket is bound here (port 0), so
there is no race for a free port; the chosen port is printed as the first stdout line.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--graceful-timeout", type=float, default=None)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.set_inheritable(True)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        args.app,
        workers=args.workers,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    server = uvicorn.Server(config)
    if args.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])


if __name__ == "__main__":
    main()
