"""Ingestion through a second broker implementation: Debian's NATS server (MQTT 3.1.1,
JetStream) into real influxd. NATS has no MQTT v5 and no shared subscriptions (a
``$share/...`` filter is granted but delivers nothing, 2.9.10), so this is single-process
ingestion with ``mqtt_protocol="3.1.1"``: packed and JSON summaries and QoS1 events stored."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.influx import InfluxClient
from cloud.ingest import IngestSettings, IngestStats, run_ingest
from edge_agent import topics
from fiberwatch.services import Influxd, NatsServer
from tests.integration._polling import wait_for
from tests.integration.test_ingest import make_event, summary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nats-server") is None,
                                 reason="nats-server not installed (scripts/setup.sh)")]
S = 1_000_000_000


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def _count(client: InfluxClient, rp: str, meas: str, field: str) -> int:
    rows = client.rows(f'SELECT count("{field}") FROM "fiberwatch"."{rp}"."{meas}"')
    return int(rows[0]["count"]) if rows else 0


def test_single_process_ingestion_through_nats_mqtt_3_1_1(nats: NatsServer,
                                                          influxd: Influxd) -> None:
    settings = IngestSettings(mqtt_port=nats.port, mqtt_protocol="3.1.1",
                              influx_url=influxd.url, backoff_initial_s=0.05)
    stats, stop, ready = IngestStats(), threading.Event(), threading.Event()
    thread = threading.Thread(target=run_ingest, args=(settings, stop),
                              kwargs={"stats": stats, "ready": ready})
    thread.start()
    try:
        assert ready.wait(30), "ingestion did not subscribe through NATS"
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nats-publisher",
                          protocol=MQTTProtocolVersion.MQTTv311)
        pub.connect("127.0.0.1", nats.port)
        pub.loop_start()
        now = time.time_ns() // S * S
        for k in range(40):
            s = summary(now - (40 - k) * S, k, groups=64)
            payload = s.to_packed() if k % 4 else replace(s).to_json()  # both encodings
            pub.publish(topics.features("s1", "g1", "das"), payload, qos=0)
        events = [make_event(i) for i in range(3)]
        for e in events:
            pub.publish(topics.events("s1", "g1"), e.to_json(), qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        client = InfluxClient(influxd.url)
        wait_for(lambda: _count(client, "raw", "features", "score_max") == 40, 30,
                 "40 summaries stored")
        wait_for(lambda: _count(client, "events", "event", "peak_score") == 3, 30,
                 "3 events stored")
        assert stats.snapshot()["malformed"] == {}
        client.close()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert stats.snapshot()["acked"] >= 3  # QoS1 events acknowledged once stored
