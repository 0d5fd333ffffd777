"""The demo's live one-line status, from what the gateways and the cloud publish.

It listens on MQTT like any cloud component (retained health, events, model state), asks
the model registry for the rollout state and the API for alert deliveries: gateways up,
frames/s, events, alerts delivered (and what the demo's webhook receiver took), federated
round, model versions served.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections import Counter
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from edge_agent import topics
from edge_agent.config import BrokerConfig
from edge_agent.mqtt_client import describe, make_client

if TYPE_CHECKING:
    from fiberwatch.demo import DemoRun


class StatusBoard:
    def __init__(self, run: DemoRun, out: Any = sys.stderr) -> None:
        self.run = run
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self.health: dict[str, dict[str, Any]] = {}
        self.model_state: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self._last_print = 0.0
        self._alerts: dict[str, Any] = {"delivered": 0, "receivers": {}, "p50_ms": None}
        self._alerts_at = -1e9
        self.broker = BrokerConfig(
            port=run.broker.port, tls=True, ca_file=run.mqtt.ca, username="viewer",
            password_file=run.mqtt.password_file("viewer"))
        #: e.g. "tls+password+acl": what the broker demands, for the status line
        self.security = describe(self.broker) + ("+acl" if run.broker.secure_dir else "")
        self._client = make_client(self.broker, f"fiberwatch-demo-status-{time.time_ns()}",
                                   protocol="v311", reconnect_delay_s=(0.2, 5))
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def start(self) -> None:
        self._client.reconnect()  # synchronous: a refused login or TLS error raises here
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, *_: Any) -> None:
        if reason.is_failure:
            return
        for t in (topics.ALL_HEALTH, topics.ALL_EVENTS, topics.ALL_MODEL_STATE):
            client.subscribe(t, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            site, gw, suffix = topics.parse(msg.topic)
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if suffix == "health":
                self.health[f"{site}/{gw}"] = body
            elif suffix == "model_state":
                self.model_state[f"{site}/{gw}"] = body
            elif suffix == "events" and isinstance(body, dict) and "id" in body:
                self.events[body["id"]] = body

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            health = dict(self.health)
            events = list(self.events.values())
        now = time.time_ns()
        up = [h for h in health.values()
              if h.get("status") in ("ok", "degraded") and now - int(h.get("t_ns", 0)) < 20e9]
        versions = sorted({str(h.get("model_version")) for h in up})
        return {
            "gateways_up": len(up),
            "gateways": len(health),
            "frames_per_s": sum(float(h.get("frames_per_s", 0)) for h in up),
            "events": len(events),
            "models": versions,
            "rollout": self._rollout(),
        }

    def _rollout(self) -> str:
        try:
            from federation.registry.store import Registry

            recs = Registry(self.run.layout.registry).list()
        except Exception:  # noqa: BLE001 - status display only; the registry may be mid-write
            return "?"
        prod = [r.version for r in recs if r.state == "production"]
        canary = [r.version for r in recs if r.state == "canary"]
        fed = sum(1 for r in recs if r.parent)
        parts = [f"prod {prod[0] if prod else '-'}"]
        if canary:
            parts.append(f"canary {canary[0]}")
        parts.append(f"fed models {fed}")
        return ", ".join(parts)

    def alerts(self) -> dict[str, Any]:
        """Alert deliveries from the API (``/alerts/deliveries``), asked at most every 2 s."""
        now = time.monotonic()
        if now - self._alerts_at >= 2.0:
            self._alerts_at = now
            req = urllib.request.Request(  # noqa: S310 - the demo's own loopback API
                f"{self.run.api_url}/api/v1/alerts/deliveries?limit=10000",
                headers={"Authorization": f"Bearer {self.run.token}"})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:  # noqa: S310 - loopback API
                    data = json.loads(r.read())
                items = data["items"]
                self._alerts = {"delivered": len(items),
                                "receivers": dict(Counter(i["receiver"] for i in items)),
                                "p50_ms": data["latency_ms"]["p50"]}
            except (OSError, ValueError, KeyError, TypeError):
                pass  # the API is starting or busy: keep the last figures
        return self._alerts

    def alerts_text(self) -> str:
        a = self.alerts()
        rx = self.run.receiver
        got = f", webhook got {rx.received}" if rx is not None else ""
        p50 = f", p50 {a['p50_ms']:.0f} ms" if a["p50_ms"] is not None else ""
        return f"alerts {a['delivered']} sent{got}{p50}"

    def line(self) -> str:
        s = self.snapshot()
        elapsed = (time.time_ns() - self.run.t0_ns) / 1e9
        child = self.run.fl_child
        fl = ("waiting" if not self.run.fl_started else
              "running" if child is not None and child.alive() else "done")
        return (f"[{elapsed:5.0f}s] mqtt {self.security}  "
                f"gateways {s['gateways_up']}/{len(self.run.gateways)}  frames/s "
                f"{s['frames_per_s']:6.0f}  events {s['events']:3d}  {self.alerts_text()}  "
                f"FL {fl}  "
                f"{s['rollout']}  serving {','.join(s['models']) or '-'}")

    def render(self) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line()[:200])
            self.out.flush()
        elif now - self._last_print >= 10:
            self._last_print = now
            print(self.line(), file=self.out, flush=True)

    def summary(self) -> str:
        s = self.snapshot()
        self._alerts_at = -1e9  # fresh figures
        a = self.alerts()
        per = ", ".join(f"{k} {v}" for k, v in sorted(a["receivers"].items())) or "none"
        rx = self.run.receiver
        took = (f"; the demo's webhook took {rx.received} (last: {rx.last_line()}), listed in "
                f"{rx.log_path}" if rx is not None else "")
        return (f"fiberwatch demo: {s['events']} events, gateways seen {s['gateways']}, "
                f"models served {', '.join(s['models']) or '-'}; {s['rollout']}\n"
                f"fiberwatch demo: alert deliveries {a['delivered']} ({per}){took}")
