"""Alerting end to end on real parts: an event published over MQTT, stored by real ingestion
in real influxd, alerted by `run_alerting` to a real webhook receiver (stdlib http.server on
loopback) and to an MQTT alert topic on the real broker; a receiver that is down then up gets
everything, in order, once the alerting process restarts over the same queue."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.alerting.service import Running, load_config, run_alerting
from cloud.codec import cloud_event_id
from cloud.influx import InfluxClient
from edge_agent import topics
from edge_agent.mqtt_client import BrokerConfig, make_client
from fiberwatch.services import Influxd, Mosquitto
from tests.alert_receiver import Receiver, free_port
from tests.integration.test_ingest import Ingest, make_event, poll, publish, start_ingest

pytestmark = pytest.mark.integration
ALERT_TOPIC = "fiberwatch/v1/alerts"


def _cloud_id(event: Any) -> str:
    """The id ingestion stores (and alerts on) a gateway's event under."""
    return cloud_event_id(event.site, event.gateway, event.id)


def write_config(path: Path, url: str) -> Path:
    path.write_text(f"""
[alerting]
state_db = "{path.parent / 'alerts.sqlite'}"
poll_interval_s = 0.2
retry_initial_s = 0.2
retry_max_s = 1.0
[[receivers]]
name = "hook"
type = "webhook"
url = "{url}"
[[receivers]]
name = "bus"
type = "mqtt"
topic = "{ALERT_TOPIC}"
[[rules]]
name = "leaks"
min_severity = "medium"
kinds = ["leak"]
receivers = ["hook", "bus"]
""")
    return path


class Alerting:
    def __init__(self, config: Path, influxd: Influxd, broker: Mosquitto) -> None:
        self.stop, ready, self.running = threading.Event(), threading.Event(), []
        self.influx = InfluxClient(influxd.url)
        self.mqtt = make_client(BrokerConfig(host="127.0.0.1", port=broker.port),
                                "alerting-test")
        self.mqtt.loop_start()
        self.thread = threading.Thread(target=run_alerting, args=(
            load_config(config), self.influx, self.stop), kwargs={
            "mqtt_client": self.mqtt, "ready": ready, "running": self.running})
        self.thread.start()
        assert ready.wait(20)

    @property
    def run(self) -> Running:
        return self.running[0]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.influx.close()


@pytest.fixture
def ingest(mosquitto: Mosquitto, influxd: Influxd) -> Iterator[Ingest]:
    running = start_ingest(mosquitto, influxd)
    yield running
    running.shutdown()


@pytest.fixture
def bus(mosquitto: Mosquitto) -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="alert-listener")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe(ALERT_TOPIC, qos=1)
    c.loop_start()
    yield got
    c.disconnect()
    c.loop_stop()


def test_event_to_webhook_and_mqtt(tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
                                   ingest: Ingest, bus: list[dict[str, Any]]) -> None:
    with Receiver() as rx:
        alerting = Alerting(write_config(tmp_path / "alerts.toml", rx.url), influxd, mosquitto)
        try:
            leak, sand = make_event(1), make_event(2, class_hint="sand")
            publish(ingest_pub := _publisher(mosquitto), topics.events("s1", "g1"),
                    leak.to_json())
            publish(ingest_pub, topics.events("s1", "g1"), sand.to_json())
            publish(ingest_pub, topics.events("s1", "g1"), leak.to_json())  # a redelivery
            bodies = rx.wait_for(1)
            poll(lambda: len(bus) >= 1, what="the MQTT alert")
            upgraded = dataclasses.replace(leak, severity="critical")
            publish(ingest_pub, topics.events("s1", "g1"), upgraded.to_json())
            bodies = rx.wait_for(2)
            poll(lambda: alerting.run.alerter.unmatched >= 1, what="the sand event read")
            ingest_pub.disconnect()
        finally:
            alerting.close()
    assert [b["alerts"][0]["labels"]["event_id"] for b in bodies] == [_cloud_id(leak)] * 2
    assert [b["alerts"][0]["labels"]["severity"] for b in bodies] == ["high", "critical"]
    assert bodies[0]["alerts"][0]["labels"]["site"] == "s1" and bodies[0]["status"] == "firing"
    assert bus[0]["alerts"][0]["labels"]["event_id"] == _cloud_id(leak)
    assert alerting.run.alerter.fired == 1 and alerting.run.alerter.renotified == 1


def test_a_down_receiver_gets_everything_after_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, ingest: Ingest) -> None:
    port = free_port()
    config = write_config(tmp_path / "alerts.toml", f"http://127.0.0.1:{port}/hook")
    alerting = Alerting(config, influxd, mosquitto)
    pub = _publisher(mosquitto)
    events = [make_event(i) for i in range(3)]
    try:
        for e in events:
            publish(pub, topics.events("s1", "g1"), e.to_json())
        poll(lambda: alerting.run.alerter.fired == 3, what="three alerts fired")
        poll(lambda: alerting.run.dispatcher.failures >= 2, what="failed deliveries")
    finally:
        alerting.close()
        pub.disconnect()
    with Receiver(port=port) as rx:
        again = Alerting(config, influxd, mosquitto)
        try:
            bodies = rx.wait_for(3)
        finally:
            again.close()
    assert [b["alerts"][0]["labels"]["event_id"] for b in bodies] == [_cloud_id(e) for e in events]
    assert again.run.alerter.fired == 0  # de-duplicated across the restart: no second alert


def _publisher(broker: Mosquitto) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{free_port()}")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def test_model_drift_is_stored_served_and_alerted(tmp_path: Path, mosquitto: Mosquitto,
                                                  influxd: Influxd, ingest: Ingest) -> None:
    from cloud import model_health
    from tests.integration.test_ingest import health

    config = tmp_path / "alerts.toml"
    write_config(config, "http://127.0.0.1:9/unused")
    text = config.read_text() + ('[[rules]]\nname = "drift"\nkinds = ["drift"]\n'
                                 'receivers = ["hook"]\n')
    now = time.time_ns()
    with Receiver() as rx:
        config.write_text(text.replace("http://127.0.0.1:9/unused", rx.url))
        alerting = Alerting(config, influxd, mosquitto)
        pub = _publisher(mosquitto)
        try:
            for i, psi in enumerate((0.02, 0.9)):  # stable, then shifted
                msg = {**health(now + i * 10**9), "model_health": {"das": [{
                    "model_version": "1.0.0", "windows": 20, "rows": 20480, "score_psi": psi,
                    "saturation_rate": 0.0, "out_of_range_rate": 0.0, "fallback_rate": 0.0}]}}
                publish(pub, topics.health("s1", "g1"), json.dumps(msg))
            bodies = rx.wait_for(1)
            stored = model_health.query(ingest.influx, "fiberwatch", site="s1", gateway="g1",
                                        start_ns=now - 10**9, end_ns=now + 10 * 10**9)
        finally:
            alerting.close()
            pub.disconnect()
    assert [p["score_psi"] for p in stored] == [0.02, 0.9]
    (body,) = bodies
    labels = body["alerts"][0]["labels"]
    assert (labels["kind"], labels["severity"], labels["gateway"]) == ("drift", "low", "g1")
    assert "score_psi 0.9" in body["alerts"][0]["annotations"]["summary"]


def test_the_process_stops_cleanly_on_a_signal_and_rejects_a_bad_config(
        tmp_path: Path, influxd: Influxd) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    bad = tmp_path / "bad.toml"
    bad.write_text('[alerting]\n[[receivers]]\nname = "x"\ntype = "webhook"\n'
                   'url = "http://alerts.example.com/"\n[[rules]]\nname = "r"\n'
                   'receivers = ["x"]\n')
    cmd = [sys.executable, "-m", "fiberwatch", "cloud", "alerting", "--influx-url", influxd.url]
    r = subprocess.run([*cmd, "--config", str(bad)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "receivers.0: url must be https" in r.stderr
    config = write_config(tmp_path / "alerts.toml", "http://127.0.0.1:9/hook")
    proc = subprocess.Popen([*cmd, "--config", str(config), "--log-level", "INFO"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: (tmp_path / "alerts.sqlite").exists(), what="the state file")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "event=alerting_stopped" in (proc.stderr.read() if proc.stderr else "")
