"""Ingestion against real Mosquitto and influxd: what is published is what the Store reads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud import codec
from cloud.influx import InfluxClient
from cloud.ingest import IngestSettings, IngestStats, run_ingest
from cloud.store import Store
from edge_agent import topics
from edge_agent.events import Event, event_id
from edge_agent.summary import FeatureSummary
from fiberwatch.services import Influxd, Mosquitto
from tests.integration._polling import wait_for

pytestmark = pytest.mark.integration
S = 1_000_000_000


def poll(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """`wait_for` with this module's defaults."""
    return wait_for(cond, timeout, what)


@dataclass
class Ingest:
    settings: IngestSettings
    stats: IngestStats
    store: Store
    influx: InfluxClient
    stop: threading.Event
    thread: threading.Thread

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def start_ingest(broker: Mosquitto, server: Influxd, **kw: Any) -> Ingest:
    state = broker.workdir.parent / "ingest-state"  # this test's spool and dead letters
    kw = {"spool_dir": str(state / "spool"), "dead_letter_dir": str(state / "dl"), **kw}
    settings = IngestSettings(mqtt_port=broker.port, influx_url=server.url,
                              backoff_initial_s=0.05, backoff_max_s=0.5, **kw)
    stats, stop, ready = IngestStats(), threading.Event(), threading.Event()
    thread = threading.Thread(target=run_ingest, args=(settings, stop),
                              kwargs={"stats": stats, "ready": ready})
    thread.start()
    assert ready.wait(20), "ingestion did not subscribe"
    influx = InfluxClient(server.url)
    return Ingest(settings, stats, Store(influx), influx, stop, thread)


@pytest.fixture
def ingest(mosquitto: Mosquitto, influxd: Influxd) -> Iterator[Ingest]:
    running = start_ingest(mosquitto, influxd)
    yield running
    if running.thread.is_alive():
        running.shutdown()


@pytest.fixture
def pub(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()


def publish(c: mqtt.Client, topic: str, payload: bytes | str, qos: int = 1,
            retain: bool = False) -> None:
    info = c.publish(topic, payload, qos=qos, retain=retain)
    if qos:
        info.wait_for_publish(10)


def make_event(i: int, **over: Any) -> Event:
    start = time.time_ns() - 60 * S + i * S
    d: dict[str, Any] = dict(
        site="s1", gateway="g1", stream="das", start_ns=start, end_ns=start + 2 * S,
        ch_start=10 * i, ch_end=10 * i + 5, dist_start_m=1.25 * i, dist_end_m=1.25 * i + 6,
        peak_score=3.5 + i, mean_score=2.0, threshold=1.0, severity="high", class_hint="leak",
        n_windows=3, model_version="1.0.0", model_hash="abc", detected_ns=start + 3 * S)
    d.update(over)
    d["id"] = event_id(d["site"], d["gateway"], d["stream"], d["start_ns"], d["ch_start"])
    return Event(**d)


def cid(e: Event) -> str:
    """The id ingestion stores `e` under (scoped by the gateway it came from)."""
    return codec.cloud_event_id(e.site, e.gateway, e.id)


def health(t_ns: int, status: str = "ok", gateway: str = "g1") -> dict[str, Any]:
    return {"schema": 1, "site": "s1", "gateway": gateway, "t_ns": t_ns, "status": status,
            "uptime_s": 12.5, "frames_per_s": 10.0, "samples_per_s": 1.0e6, "queue_depth": 1,
            "drops": {"queue_full": 2, "malformed:crc": 1}, "gaps": 4,
            "latency_ms": {"p50": 1.5, "p99": 7.25}, "outbox_depth": 3, "outbox_evicted": 0,
            "model_version": "1.0.0", "model_hash": "abc", "rss_mb": 55.5}


def summary(t_ns: int, k: int, groups: int = 256) -> FeatureSummary:
    score = np.round(np.linspace(0, 1, groups) + k, 3).tolist()
    return FeatureSummary(site="s1", gateway="g1", stream="das", t_ns=t_ns, ch_start=0,
                          group_size=4, score=score, energy=[20.0 + k] * groups,
                          threshold=[0.5] * groups, model_version="1.0.0")


def test_events_appear_with_every_field(ingest: Ingest, pub: mqtt.Client) -> None:
    events = [make_event(i, severity=sev) for i, sev in enumerate(("low", "high", "critical"))]
    for e in events:
        publish(pub, topics.events("s1", "g1"), e.to_json())
    got = poll(lambda: len(ingest.store.anomalies()) == 3 and ingest.store.anomalies(),
               what="3 events")
    assert [g["id"] for g in got] == [cid(e) for e in reversed(events)]  # newest first
    for g, e in zip(got, reversed(events), strict=True):
        received = g.pop("received_ns")
        assert g.pop("labels") == []
        assert g.pop("gateway_event_id") == e.id  # stored under the cloud's id (cid)
        assert g == {**e.to_dict(), "id": cid(e)}
        assert all(type(g[k]) is type(v) for k, v in e.to_dict().items())
        assert 0 < received - e.detected_ns
    assert ingest.store.anomaly(cid(events[0]))["severity"] == "low"
    assert [e["id"] for e in ingest.store.anomalies(severity="critical")] == [cid(events[2])]


def test_the_same_event_twice_is_one_point(ingest: Ingest, pub: mqtt.Client) -> None:
    e, other = make_event(1), make_event(2)
    for x in (e, e, other):
        publish(pub, topics.events("s1", "g1"), x.to_json())
    poll(lambda: ingest.stats.snapshot()["messages_written"] >= 3, what="3 messages written")
    assert len(ingest.store.anomalies()) == 2
    rows = ingest.influx.rows('SELECT count("peak_score") FROM "fiberwatch"."events"."event"')
    assert rows[0]["count"] == 2


def test_malformed_messages_are_counted_and_ingestion_goes_on(ingest: Ingest,
                                                             pub: mqtt.Client) -> None:
    publish(pub, topics.events("s1", "g1"), b"{not json")
    publish(pub, topics.events("s1", "g1"), json.dumps({"id": "x"}))
    publish(pub, topics.features("s1", "g1", "das"), b"[1,2]", qos=0)
    publish(pub, topics.health("s1", "g1"), json.dumps({"schema": 1}))
    publish(pub, topics.events("s1", "g2"), make_event(1).to_json())  # claims gateway g1
    good = make_event(3)
    publish(pub, topics.events("s1", "g1"), good.to_json())
    poll(lambda: ingest.store.anomaly(cid(good)), what="the valid event")
    poll(lambda: sum(ingest.stats.snapshot()["malformed"].values()) == 5, what="5 malformed")
    assert ingest.stats.snapshot()["malformed"] == {
        "event:json": 1, "event:schema": 1, "features:schema": 1, "health:schema": 1,
        "event:topic_mismatch": 1}
    assert ingest.thread.is_alive()


def test_features_give_a_waterfall(ingest: Ingest, pub: mqtt.Client) -> None:
    now = time.time_ns() // (10 * S) * (10 * S)
    for k in range(40):
        publish(pub, topics.features("s1", "g1", "das"), summary(now - (40 - k) * S, k).to_json(),
                qos=0)
    poll(lambda: ingest.stats.snapshot()["lines"].get("raw", 0) >= 40, what="40 summaries")
    w = ingest.store.window(site="s1", gateway="g1", stream="das", start_ns=now - 40 * S,
                            end_ns=now, ch_start=0, ch_end=1023, max_times=20)
    assert w["group_size"] == 4 and w["channels"] == list(range(0, 1024, 4))
    assert w["resolution_s"] == 2.0 and len(w["times_ns"]) == 20
    assert len(w["values"]) == 256 and all(len(row) == 20 for row in w["values"])
    assert w["values"][0] == [float(2 * c + 1) for c in range(20)]  # max of 2 s each
    assert w["values"][255][-1] == 40.0  # float16 of 39 + 1.0
    energy = ingest.store.window(site="s1", gateway=None, stream="das", start_ns=now - 40 * S,
                                 end_ns=now, ch_start=8, ch_end=11, max_times=4,
                                 field="energy")
    assert energy["channels"] == [8] and energy["resolution_s"] == 10.0
    assert energy["source"] == "history" and energy["values"][0][:3] == [24.5, 34.5, 44.5]


def test_health_and_model_state_give_the_fleet(ingest: Ingest, pub: mqtt.Client) -> None:
    t = time.time_ns()
    publish(pub, topics.health("s1", "g1"), json.dumps(health(t)), retain=True)
    publish(pub, topics.model_state("s1", "g1"),
            json.dumps({"model_version": "1.0.0", "model_hash": "abc", "status": "serving"}),
            retain=True)
    by = {"das": {"p50": 120.0, "p99": 481.0}, "dts": {"p50": 2512.0, "p99": 4030.0}}
    publish(pub, topics.health("s1", "g2"),  # a newer agent: latency per stream too
            json.dumps({**health(t, gateway="g2"), "latency_ms_by_stream": by}), retain=True)
    fleet = poll(lambda: (f := ingest.store.fleet()) and len(f) == 2 and f[0].get("model_status")
                 and f, what="fleet of 2")
    g1 = fleet[0]
    expected = {"site": "s1", "gateway": "g1", "status": "ok", "model_version": "1.0.0",
                "model_hash": "abc", "frames_per_s": 10.0, "samples_per_s": 1.0e6,
                "outbox_depth": 3, "drops_total": 3, "gaps": 4, "latency_p99_ms": 7.25,
                "rss_mb": 55.5, "model_status": "serving", "t_ns": t}
    assert {k: g1[k] for k in expected} == expected
    assert g1["last_seen_ns"] >= t and g1["drops"] == {"malformed:crc": 1, "queue_full": 2}
    assert g1["latency_p99_ms_by_stream"] == {}  # g1's agent predates per-stream latency
    assert fleet[1]["latency_p99_ms_by_stream"] == {"das": 481.0, "dts": 4030.0}
    assert fleet[1]["latency_p50_ms_by_stream"] == {"das": 120.0, "dts": 2512.0}
    publish(pub, topics.health("s1", "g1"), json.dumps(health(t + S, status="degraded")))
    poll(lambda: ingest.store.fleet()[0]["status"] == "degraded", what="newer health")
    assert ingest.store.fleet()[0]["model_status"] == "serving"  # merged, not replaced


@pytest.mark.slow
def test_influxd_outage_loses_nothing(ingest: Ingest, pub: mqtt.Client, influxd: Influxd) -> None:
    n_before, n_during, n_after = 10, 60, 10
    now = time.time_ns() // S * S
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            publish(pub, topics.events("s1", "g1"), make_event(sent).to_json())
            publish(pub, topics.features("s1", "g1", "das"),
                    summary(now - 200 * S + sent * S, sent, groups=64).to_json(), qos=0)
            sent += 1

    send(n_before)
    poll(lambda: ingest.stats.snapshot()["messages_written"] >= 2 * n_before, what="first batch")
    influxd.stop()
    down_since = time.monotonic()
    retries = ingest.stats.snapshot()["write_retries"]
    send(n_during)
    # the outage lasts at least 3 s and ingestion must have seen it fail repeatedly
    poll(lambda: ingest.stats.snapshot()["write_retries"] >= retries + 5
         and time.monotonic() - down_since >= 3.0, what="a 3 s outage with failed writes")
    assert ingest.stats.snapshot()["acked"] == n_before  # nothing acked while down
    influxd.start()  # same port, same data directory
    send(n_after)
    total = n_before + n_during + n_after
    poll(lambda: len(ingest.store.anomalies(limit=1000)) == total, timeout=60,
         what=f"{total} events")
    rows = ingest.influx.rows('SELECT count("n") FROM "fiberwatch"."raw"."features"')
    assert rows[0]["count"] == total
    snap = ingest.stats.snapshot()
    assert snap["dropped"] == {} and snap["malformed"] == {}


def test_qos1_published_while_ingestion_is_down_arrives(mosquitto: Mosquitto, influxd: Influxd,
                                                        pub: mqtt.Client) -> None:
    first = start_ingest(mosquitto, influxd)
    first.shutdown()
    events = [make_event(i) for i in range(5)]
    for e in events:
        publish(pub, topics.events("s1", "g1"), e.to_json())
    second = start_ingest(mosquitto, influxd)  # same client id: the session kept them
    try:
        poll(lambda: len(second.store.anomalies()) == 5, what="events from the session")
    finally:
        second.shutdown()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_process_ingests_and_stops_cleanly_on_a_signal(mosquitto: Mosquitto, influxd: Influxd,
                                                           pub: mqtt.Client, sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cloud.ingest", "--mqtt-port",
                             str(mosquitto.port), "--influx-url", influxd.url,
                             "--client-id", f"proc-{sig}"], stderr=subprocess.PIPE)
    try:
        store = Store(InfluxClient(influxd.url))
        e = make_event(1)

        def stored() -> bool:  # republish until the process has subscribed
            publish(pub, topics.events("s1", "g1"), e.to_json())
            return store.anomaly(cid(e)) is not None

        poll(stored, what="the process to store an event")
        proc.send_signal(sig)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert b"Traceback" not in proc.stderr.read()
