"""A real Alertmanager-style webhook receiver for tests: stdlib http.server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Collects POSTed JSON bodies; `status` is the HTTP status it answers with."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received_ns: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.status = status
        self.got = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                if outer.status < 300:
                    with outer.got:
                        outer.bodies.append(body)
                        outer.received_ns.append(time.time_ns())
                        outer.headers.append(dict(self.headers))
                        outer.got.notify_all()
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        with self.got:
            self.got.wait_for(lambda: len(self.bodies) >= n, timeout)
            return list(self.bodies)


def free_port() -> int:
    """A loopback port nobody listens on (for a receiver that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
