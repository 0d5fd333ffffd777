# ruff: noqa: F811 - the fixtures `ingest` and `pub` are imported from test_ingest
"""Hostile messages against real Mosquitto and influxd: none stalls ingestion, none hides
another gateway's event, none from the future freezes the fleet view."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud import codec
from cloud.influx import InfluxClient
from cloud.store import Store
from edge_agent import topics
from fiberwatch.services import Influxd, Mosquitto
from tests.integration.test_ingest import (  # noqa: F401 - fixtures
    Ingest,
    health,
    ingest,
    make_event,
    poll,
    pub,
    publish,
    start_ingest,
    summary,
)

pytestmark = pytest.mark.integration
S = 1_000_000_000
DAY = 86400 * S


@pytest.fixture
def small_influxd(tmp_path: Path) -> Iterator[Influxd]:
    """influxd with a 100 kB write body limit (its default is 25 MB: the same behaviour)."""
    with Influxd(tmp_path / "influxd-small", max_body_size=100_000) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def ingest_small(mosquitto: Mosquitto, small_influxd: Influxd,
                 tmp_path: Path) -> Iterator[Ingest]:
    running = start_ingest(mosquitto, small_influxd, dead_letter_dir=str(tmp_path / "dl"),
                           broken_split_bytes=50_000, broken_attempts=2)
    yield running
    if running.thread.is_alive():
        running.shutdown()


def test_a_message_over_influxds_body_limit_does_not_stall_ingestion(
        ingest_small: Ingest, pub: mqtt.Client, tmp_path: Path) -> None:
    t = time.time_ns()
    big = {**health(t), "status": "x" * 150_000}  # under the health cap, over influxd's limit
    publish(pub, topics.health("s1", "g1"), json.dumps(big))
    after = make_event(1)
    publish(pub, topics.events("s1", "g1"), after.to_json())
    cloud_id = codec.cloud_event_id("s1", "g1", after.id)
    poll(lambda: ingest_small.store.anomaly(cloud_id), what="the event after the big message")
    snap = ingest_small.stats.snapshot()
    assert snap["dropped"].get("dead_letter", 0) >= 1 and snap["dead_letters"] >= 1
    text = (tmp_path / "dl" / "dead-letter.jsonl").read_text()
    assert '"reason": "broken_pipe"' in text or '"reason": "http_413"' in text
    rows = poll(lambda: ingest_small.influx.rows(
        'SELECT "dead_letters" FROM "fiberwatch"."events"."ingest"'), what="the status point")
    assert rows[0]["dead_letters"] >= 1


def test_a_forged_event_id_does_not_hide_the_other_gateways_event(ingest: Ingest,
                                                                  pub: mqtt.Client) -> None:
    real = make_event(1)  # g1's alarm
    forged = dataclasses.replace(real, gateway="g2", severity="low", peak_score=0.1)
    publish(pub, topics.events("s1", "g1"), real.to_json())
    publish(pub, topics.events("s1", "g2"), forged.to_json())
    got = poll(lambda: len(e := ingest.store.anomalies()) == 2 and e, what="both events")
    by_gateway = {e["gateway"]: e for e in got}
    assert by_gateway["g1"]["severity"] == "high" and by_gateway["g2"]["severity"] == "low"
    assert by_gateway["g1"]["gateway_event_id"] == real.id
    g1 = ingest.store.anomaly(codec.cloud_event_id("s1", "g1", real.id))
    assert g1 is not None and g1["gateway"] == "g1" and g1["peak_score"] == real.peak_score


def test_a_future_heartbeat_does_not_freeze_the_fleet_row(ingest: Ingest,
                                                          pub: mqtt.Client) -> None:
    t = time.time_ns()
    publish(pub, topics.health("s1", "g1"), json.dumps(health(t + DAY, status="future")))
    publish(pub, topics.health("s1", "g1"), json.dumps(health(t, status="now")))
    poll(lambda: ingest.store.fleet() and ingest.store.fleet()[0]["status"] == "now",
         what="the real heartbeat in the fleet row")
    publish(pub, topics.health("s1", "g1"), json.dumps(health(t + S, status="later")))
    poll(lambda: ingest.store.fleet()[0]["status"] == "later", what="the next heartbeat")
    assert ingest.stats.snapshot()["malformed"] == {"health:future_time": 1}


def _spooled(directory: Path) -> int:
    from cloud.ingest.spool import _records

    return sum(1 for seg in directory.glob("spool-*.bin") for _ in _records(seg, 0))


def test_summaries_survive_a_sigkill_of_ingestion(mosquitto: Mosquitto, influxd: Influxd,
                                                  pub: mqtt.Client, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    argv = [sys.executable, "-m", "cloud.ingest", "--mqtt-port", str(mosquitto.port),
            "--influx-url", influxd.url, "--client-id", "sigkill", "--spool-dir", str(spool),
            "--dead-letter-dir", str(tmp_path / "dl")]
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    second = None
    try:
        probe = make_event(0)
        store = Store(InfluxClient(influxd.url))

        def subscribed() -> bool:  # republish until the process has subscribed
            publish(pub, topics.events("s1", "g1"), probe.to_json())
            return store.anomaly(codec.cloud_event_id("s1", "g1", probe.id)) is not None

        poll(subscribed, what="ingestion to store an event")
        influxd.stop()  # summaries now wait in ingestion's memory (and its spool)
        now = time.time_ns() // S * S
        for k in range(20):
            publish(pub, topics.features("s1", "g1", "das"),
                    summary(now - (20 - k) * S, k, groups=16).to_json(), qos=0)
        poll(lambda: _spooled(spool) >= 20, what="20 spooled summaries")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        influxd.start()
        second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        influx = InfluxClient(influxd.url)
        poll(lambda: _count(influx) == 20, timeout=60, what="all 20 summaries stored")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _count(influx: InfluxClient) -> int:
    rows = influx.rows('SELECT count("n") FROM "fiberwatch"."raw"."features"')
    return int(rows[0]["count"]) if rows else 0


def test_an_event_resent_with_another_severity_and_start_is_one_point(
        ingest: Ingest, pub: mqtt.Client) -> None:
    first = make_event(1, severity="low")
    grown = dataclasses.replace(first, severity="critical", class_hint="sand",
                                start_ns=first.start_ns - S, peak_score=9.0)
    other = make_event(2)
    for e in (first, other):
        publish(pub, topics.events("s1", "g1"), e.to_json())
    poll(lambda: len(ingest.store.anomalies()) == 2, what="the first version")
    publish(pub, topics.events("s1", "g1"), grown.to_json())  # same id, other series/time
    poll(lambda: ingest.stats.snapshot()["lines"].get("events_superseded") == 1,
         what="the old point deleted")
    rows = ingest.influx.rows('SELECT "gateway_event_id", "severity", "peak_score" FROM '
                              '"fiberwatch"."events"."event"')
    mine = [r for r in rows if r["gateway_event_id"] == first.id]
    assert len(rows) == 2 and len(mine) == 1  # one point per event, the newest version
    assert mine[0]["severity"] == "critical" and mine[0]["peak_score"] == 9.0
