"""The demo's alerting: its rules file and a loopback webhook receiver a user can watch.

`fiberwatch demo` runs `fiberwatch cloud alerting` like a real cloud does (TLS, the
``alerting`` login and its ACL from `fiberwatch.deploy`) with rules that send every event of
`min_severity` or more, and every drift alert, to an Alertmanager-style webhook and to the
MQTT alert topic. Unless the demo is given a webhook URL of the user's own, it starts
`WebhookReceiver` on loopback: each alert it takes is appended to ``alerts-received.jsonl``
in the demo folder (with the arrival time), and the status line counts them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ALERT_TOPIC = "fiberwatch/v1/alerts"
MAX_BODY = 1 << 20  # an Alertmanager message of one alert is a few KB


class WebhookReceiver:
    """An Alertmanager-webhook receiver on 127.0.0.1 (stdlib HTTP server, own thread)."""

    def __init__(self, log_path: Path, port: int = 0) -> None:
        self.log_path = log_path
        self.received = 0  # alerts (not messages) taken
        self.last: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="demo-webhook", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    if not 0 < n <= MAX_BODY:
                        raise ValueError(f"body of {n} bytes")
                    outer.take(json.loads(self.rfile.read(n)))
                    code = 200
                except ValueError:  # not JSON, or not an Alertmanager message
                    code = 400
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def take(self, body: dict[str, Any]) -> None:
        """Record one Alertmanager webhook message (a `ValueError` if it is not one)."""
        alerts = body.get("alerts") if isinstance(body, dict) else None
        if not isinstance(alerts, list):
            raise ValueError("no alerts list")
        now = time.time_ns()
        with self._lock, self.log_path.open("a") as f:
            for a in alerts:
                f.write(json.dumps({"received_ns": now, **a}) + "\n")
                self.received += 1
                self.last = a

    def last_line(self) -> str:
        with self._lock:
            a = self.last
        if a is None:
            return "-"
        lab = a.get("labels", {})
        return (f"{lab.get('severity', '?')} {lab.get('kind', '?')} at "
                f"{lab.get('site', '?')}/{lab.get('gateway', '?')} ({a.get('status', '?')})")

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(path: Path, *, state_db: Path, webhook_url: str, min_severity: str,
                 external_url: str, poll_interval_s: float = 0.5) -> Path:
    """The demo's rules: events of `min_severity` or more and drift alerts, to the webhook
    and the MQTT alert topic. Checked like any alerting file (`ConfigError` if not valid)."""
    from cloud.alerting.service import load_config

    receivers = '["demo-webhook", "bus"]'
    path.write_text(
        "# Written by `fiberwatch demo` for this run (fiberwatch config check checks it).\n"
        f"[alerting]\nstate_db = {json.dumps(str(state_db))}\n"
        f"poll_interval_s = {poll_interval_s}\nretry_initial_s = 0.5\nretry_max_s = 5.0\n"
        f"external_url = {json.dumps(external_url)}\n\n"
        f'[[receivers]]\nname = "demo-webhook"\ntype = "webhook"\n'
        f"url = {json.dumps(webhook_url)}\n\n"
        f'[[receivers]]\nname = "bus"\ntype = "mqtt"\ntopic = "{ALERT_TOPIC}"\n\n'
        f'[[rules]]\nname = "demo-drift"\nkinds = ["drift"]\nreceivers = {receivers}\n\n'
        f'[[rules]]\nname = "demo-events"\nmin_severity = "{min_severity}"\n'
        f"receivers = {receivers}\n")
    load_config(path)
    return path
