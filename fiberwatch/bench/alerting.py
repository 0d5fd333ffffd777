"""`fiberwatch bench alerting`: event -> webhook latency and delivery through real parts.

Real Mosquitto, real ingestion (`cloud.ingest.run_ingest`) into real influxd, the alerting
loop (`cloud.alerting.service.run_alerting`, default 1 s poll) and a stdlib HTTP webhook
receiver on loopback. Events are published as a gateway publishes them (QoS1 on its events
topic) with ``detected_ns`` = the publish time; latency is receiver arrival - detected_ns.
Then the receiver goes down for a while, more events are published, it comes back, and
the run counts what arrived (``lost`` must be 0, ``duplicates`` counts at-least-once
re-deliveries).

JSON keys: ``alert_latency_ms`` {n, p50, p99, max}, ``outage`` {events, outage_s,
delivered, lost, duplicates, drain_s}, ``poll_interval_s``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fiberwatch.demo_alerts import WebhookReceiver

S = 1_000_000_000


class _Receiver(WebhookReceiver):
    """The demo's webhook receiver (it checks each message), keeping every alert's
    ``(event_id, status, arrival ns)`` in `got`; started at once."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(Path(os.devnull), port)
        self.got: list[tuple[str, str, int]] = []
        self.start()

    def take(self, body: dict[str, Any]) -> None:
        super().take(body)
        now = time.time_ns()
        self.got.extend((a["labels"]["event_id"], a["status"], now) for a in body["alerts"])

    def close(self) -> None:
        self.stop()


def _event(i: int, start_ns: int) -> Any:
    from edge_agent.events import Event, event_id

    d = {"site": "bench", "gateway": "gw1", "stream": "das", "start_ns": start_ns,
         "end_ns": start_ns + S, "ch_start": i, "ch_end": i + 3, "dist_start_m": float(i),
         "dist_end_m": float(i + 3), "peak_score": 4.0, "mean_score": 2.0, "threshold": 1.0,
         "severity": "high", "class_hint": "leak", "n_windows": 2, "model_version": "1",
         "model_hash": "h", "detected_ns": time.time_ns()}
    return Event(id=event_id("bench", "gw1", "das", start_ns, i), **d)  # type: ignore[arg-type]


def _config(folder: Path, port: int) -> Any:
    from cloud.alerting.service import load_config

    path = folder / "alerts.toml"
    path.write_text(f'[alerting]\nstate_db = "{folder / "alerts.sqlite"}"\n'
                    'retry_initial_s = 0.5\nretry_max_s = 2.0\n'
                    f'[[receivers]]\nname = "hook"\ntype = "webhook"\n'
                    f'url = "http://127.0.0.1:{port}/hook"\n'
                    '[[rules]]\nname = "all"\nreceivers = ["hook"]\n')
    return load_config(path)


def _wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _alert_id(e: Any) -> str:
    """The id an alert names an event by: the cloud's (ingestion scopes ids by gateway)."""
    from cloud.codec import cloud_event_id

    return cloud_event_id(e.site, e.gateway, e.id)


def _publish(pub: Any, events: list[Any]) -> None:
    from edge_agent import topics

    for e in events:
        pub.publish(topics.events("bench", "gw1"), e.to_json(), qos=1).wait_for_publish(10)


def _pcts(ms: list[float]) -> dict[str, Any]:
    if not ms:
        raise RuntimeError("no alert for a published event reached the webhook")
    a = np.asarray(ms)
    return {"n": len(ms), "p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "max": round(float(a.max()), 1)}


def _stack(tmp: Path) -> Any:
    from contextlib import ExitStack

    from fiberwatch.services import Influxd, Mosquitto

    stack = ExitStack()
    broker = stack.enter_context(Mosquitto(tmp / "mosquitto"))
    influxd = stack.enter_context(Influxd(tmp / "influxd"))
    return stack, broker, influxd


def _start(broker: Any, influxd: Any, config: Any) -> tuple[threading.Event, list[Any]]:
    from cloud.alerting.service import run_alerting
    from cloud.influx import InfluxClient
    from cloud.ingest import IngestSettings, run_ingest

    stop, ready = threading.Event(), threading.Event()
    settings = IngestSettings(mqtt_port=broker.port, influx_url=influxd.url)
    threads = [threading.Thread(target=run_ingest, args=(settings, stop),
                                kwargs={"ready": ready})]
    threads[0].start()
    ready.wait(30)
    a_ready = threading.Event()
    threads.append(threading.Thread(target=run_alerting, args=(
        config, InfluxClient(influxd.url), stop), kwargs={"ready": a_ready}))
    threads[1].start()
    a_ready.wait(30)
    return stop, threads


def run(quick: bool, out_dir: Path) -> dict[str, Any]:  # noqa: ARG001 - no plots
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    n, n_outage, outage_s = (20, 10, 3.0) if quick else (200, 50, 15.0)
    with tempfile.TemporaryDirectory(prefix="fw-bench-alerting-") as d:
        tmp = Path(d)
        stack, broker, influxd = _stack(tmp)
        with stack:
            rx = _Receiver()
            config = _config(tmp, rx.port)
            stop, threads = _start(broker, influxd, config)
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alert-pub")
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            try:
                latency = _latency(pub, rx, n)
                outage = _outage(pub, rx, n_outage, outage_s)
            finally:
                pub.loop_stop()
                pub.disconnect()
                stop.set()
                for t in threads:
                    t.join(30)
                rx.close()
    return {"alert_latency_ms": latency, "outage": outage,
            "poll_interval_s": config.alerting.poll_interval_s, "quick": quick}


def _latency(pub: Any, rx: _Receiver, n: int) -> dict[str, Any]:
    now = time.time_ns()
    sent: dict[str, int] = {}
    for i in range(n):
        e = _event(i * 10, now - 60 * S + i * S)
        sent[_alert_id(e)] = e.detected_ns
        _publish(pub, [e])
        time.sleep(0.2)  # ~5 events/s, about one per poll or less
    _wait(lambda: len({g[0] for g in rx.got}) >= n, 60)
    first: dict[str, int] = {}
    for eid, _, t in rx.got:
        first.setdefault(eid, t)
    return _pcts([(first[k] - v) / 1e6 for k, v in sent.items() if k in first])


def _outage(pub: Any, rx: _Receiver, n: int, outage_s: float) -> dict[str, Any]:
    port = rx.port
    rx.close()
    before = len(rx.got)
    now = time.time_ns()
    events = [_event(10_000 + i, now - 30 * S + i * S) for i in range(n)]
    _publish(pub, events)
    time.sleep(outage_s)
    back = _Receiver(port)
    t0 = time.monotonic()
    ids = {_alert_id(e) for e in events}
    _wait(lambda: ids <= {g[0] for g in back.got}, 120)
    drain = time.monotonic() - t0
    got = [g[0] for g in back.got if g[0] in ids]
    back.close()
    rx.got = rx.got[:before]
    return {"events": n, "outage_s": outage_s, "delivered": len(set(got)),
            "lost": len(ids - set(got)), "duplicates": len(got) - len(set(got)),
            "drain_s": round(drain, 2)}


def to_markdown(result: dict[str, Any]) -> str:
    lat, o = result["alert_latency_ms"], result["outage"]
    return (f"## alerting\n\nEvent published by a gateway -> real ingestion -> influxd -> "
            f"alerting (poll {result['poll_interval_s']:g} s) -> Alertmanager-style webhook on "
            f"loopback: **p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms** "
            f"(max {lat['max']:.0f} ms, n = {lat['n']}). Receiver down {o['outage_s']:g} s "
            f"while {o['events']} events arrived: {o['delivered']} delivered after it came "
            f"back ({o['drain_s']:g} s to drain), **{o['lost']} lost**, "
            f"{o['duplicates']} duplicates.\n")
