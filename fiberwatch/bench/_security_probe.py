"""MQTT and HTTP probes the security checks attack with (real clients, real brokers)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import BrokerConfig
from edge_agent.events import Event, event_id
from edge_agent.mqtt_client import make_client

S = 10**9


@dataclass
class Probe:
    """One MQTT connection: what the broker answered, what it delivered, its PUBACK codes."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    reason: str = "no answer"
    received: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: dict[int, str] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.reason == "Success"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                timeout: float = 10.0) -> str:
        """Publish at QoS1; the broker's PUBACK reason (v5) or "no puback"."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + timeout
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pubacks.get(info.mid, "no puback")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, ca: Path, user: str | None, password: str | None, *,
            timeout: float = 10.0) -> Probe:
    """Log in over TLS (MQTT v5) and wait for the CONNACK; never raises on a refusal."""
    broker = BrokerConfig(port=port, tls=True, ca_file=ca)
    c = make_client(broker, f"probe-{time.time_ns()}", reconnect_delay_s=(30, 60))
    if user is not None:
        c.username_pw_set(user, password)
    p = Probe(c)

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        p.reason = str(rc)
        p.connack.set()

    c.on_connect = on_connect
    c.on_message = lambda _c, _u, m: p.received.append((m.topic, bytes(m.payload)))
    c.on_publish = lambda _c, _u, mid, rc, _p: p.pubacks.__setitem__(mid, str(rc))
    c.on_disconnect = lambda *_: p.connack.set()
    try:
        c.reconnect()
    except OSError as exc:
        p.reason = f"connection failed: {exc}"
        return p
    c.loop_start()
    p.connack.wait(timeout)
    return p


def make_event(site: str, gateway: str, tag: int) -> Event:
    start = time.time_ns() - 60 * S + tag
    d: dict[str, Any] = dict(
        site=site, gateway=gateway, stream="das", start_ns=start, end_ns=start + 2 * S,
        ch_start=tag % 1000, ch_end=tag % 1000 + 5, dist_start_m=1.0, dist_end_m=6.0,
        peak_score=9.0, mean_score=5.0, threshold=1.0, severity="high", class_hint="leak",
        n_windows=3, model_version="bench", model_hash="bench", detected_ns=start + 3 * S)
    d["id"] = event_id(d["site"], d["gateway"], d["stream"], d["start_ns"], d["ch_start"])
    return Event(**d)


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def http(method: str, url: str, token: str | None = None,
         body: dict[str, Any] | None = None) -> int:
    """The HTTP status of one request (4xx/5xx included; 0 if nothing answered)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0
