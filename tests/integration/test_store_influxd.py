"""Store and schema against a real influxd: filters, labels, rounds, waterfalls, RPs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cloud import codec, schema
from cloud.influx import InfluxClient, InfluxError
from cloud.store import Store, UnknownEvent
from edge_agent.events import Event, event_id
from fiberwatch.services import Influxd

pytestmark = pytest.mark.integration
S = 1_000_000_000


@pytest.fixture
def influx(influxd: Influxd) -> Iterator[InfluxClient]:
    client = InfluxClient(influxd.url)
    schema.ensure_schema(client)
    yield client
    client.close()


def rps(client: InfluxClient) -> dict[str, int]:
    return {r["name"]: schema.parse_duration(r["duration"])
            for r in client.rows('SHOW RETENTION POLICIES ON "fiberwatch"')}


def test_schema_is_idempotent_and_follows_settings(influx: InfluxClient) -> None:
    schema.ensure_schema(influx)
    assert rps(influx) == {"autogen": 0, "raw": 86400, "history": 365 * 86400, "events": 0}
    schema.ensure_schema(influx, retention=schema.Retention(raw="48h", history="52w"))
    got = rps(influx)
    assert got["raw"] == 2 * 86400 and got["history"] == 52 * 7 * 86400
    with pytest.raises(ValueError):
        schema.Retention(raw="10m")


def put_events(influx: InfluxClient, *events: Event) -> None:
    influx.write(schema.DB, [codec.event_line(e, e.detected_ns + 1) for e in events],
                 rp=schema.RP_EVENTS)


def event(i: int, **over: Any) -> Event:
    d: dict[str, Any] = dict(
        site="s1", gateway="g1", stream="das", start_ns=1_700_000_000 * S + i * 100 * S,
        ch_start=100 * i, ch_end=100 * i + 9, dist_start_m=10.0 * i, dist_end_m=10.0 * i + 5,
        peak_score=2.0, mean_score=1.5, threshold=1.0, severity="medium", class_hint="flow",
        n_windows=1, model_version="1.0.0", model_hash="h")
    d.update(over)
    d.setdefault("end_ns", d["start_ns"] + 10 * S)
    d["detected_ns"] = d["end_ns"] + 1
    d["id"] = event_id(d["site"], d["gateway"], d["stream"], d["start_ns"], d["ch_start"])
    return Event(**d)


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["ch_start"] // 100 for r in rows]


def test_anomaly_filters(influx: InfluxClient) -> None:
    es = [event(0), event(1, severity="high", gateway="g2"), event(2, class_hint="leak"),
          event(3, dist_start_m=95.0, dist_end_m=80.0), event(4, model_version="2.0.0")]
    put_events(influx, *es)
    store = Store(influx)
    assert ids(store.anomalies()) == [4, 3, 2, 1, 0]
    assert ids(store.anomalies(gateway="g2")) == [1]
    assert ids(store.anomalies(severity="high")) == [1]
    assert ids(store.anomalies(class_hint="leak")) == [2]
    assert ids(store.anomalies(model_version="2.0.0")) == [4]
    assert ids(store.anomalies(ch_min=105, ch_max=205)) == [2, 1]  # overlap, not inclusion
    assert ids(store.anomalies(dist_min=84.0, dist_max=86.0)) == [3]  # reversed along fiber
    assert ids(store.anomalies(dist_min=14.0, dist_max=21.0)) == [2, 1]
    t1 = es[1].start_ns
    assert ids(store.anomalies(start_ns=t1 + 5 * S, end_ns=t1 + 100 * S)) == [2, 1]
    assert ids(store.anomalies(limit=2, offset=1)) == [3, 2]
    assert store.anomaly("no-such-id") is None


def test_labels(influx: InfluxClient) -> None:
    e = event(0)
    put_events(influx, e)
    store = Store(influx)
    first = store.add_label(e.id, label="confirmed", note='leak at "B7",\nvalve=3\\n', user="al")
    store.add_label(e.id, label="note", note="", user="bo")
    with pytest.raises(UnknownEvent):
        store.add_label("missing", label="note", note="x", user="al")
    labels = store.labels(e.id)
    assert [(x["label"], x["user"], x["note"]) for x in labels] == [
        ("confirmed", "al", 'leak at "B7",\nvalve=3\\n'), ("note", "bo", "")]
    assert labels[0] == first
    assert store.anomalies()[0]["labels"] == labels
    assert store.anomaly(e.id)["labels"] == labels


def test_fl_round_format_documented_in_schema(influx: InfluxClient) -> None:
    end = time.time_ns() - 3600 * S
    lines = [
        f'fl_round,run_id=run-1,strategy=FedAvg round={r}i,participants=5i,failures=0i,'
        f'loss={0.5 / r},auc=0.9,bytes_up=1000i,bytes_down=2000i,duration_s=2.5,'
        f'model_version="1.{r}.0" {end + r * S}' for r in (1, 2, 3)]
    influx.write(schema.DB, lines, rp=schema.RP_HISTORY)
    rounds = Store(influx).rounds(limit=2)
    assert [r["round"] for r in rounds] == [3, 2]
    assert rounds[0] == {"time_ns": end + 3 * S, "run_id": "run-1", "strategy": "FedAvg",
                         "round": 3, "participants": 5, "failures": 0, "loss": 0.5 / 3,
                         "auc": 0.9, "bytes_up": 1000, "bytes_down": 2000, "duration_s": 2.5,
                         "model_version": "1.3.0"}


def features(gateway: str, t: int, score: list[float], energy: list[float], ch_start: int = 0,
             group: int = 1) -> str:
    return codec.features_line(schema.FEATURES, site="s1", gateway=gateway, stream="das",
                               t_ns=t, ch_start=ch_start, group_size=group,
                               score=np.array(score), energy=np.array(energy),
                               threshold=np.array(score) * 0, model_version="1", flagged=0)


def test_window_merges_gateways(influx: InfluxClient) -> None:
    now = time.time_ns() // (10 * S) * (10 * S)
    lines = []
    for k in range(10):
        t = now - 10 * S + k * S
        lines.append(features("g1", t, [k, k], [1.0, 1.0]))  # channels 0-1
        lines.append(features("g2", t, [5.0, 5.0], [3.0, 3.0], ch_start=1))  # channels 1-2
    influx.write(schema.DB, lines, rp=schema.RP_RAW)
    store = Store(influx)
    w = store.window(site="s1", gateway=None, stream="das", start_ns=now - 10 * S, end_ns=now,
                     ch_start=0, ch_end=2, max_times=1000)
    assert w["source"] == "raw" and w["resolution_s"] == 1.0 and w["channels"] == [0, 1, 2]
    assert w["values"][0] == [float(k) for k in range(10)]
    assert w["values"][1] == [float(max(k, 5)) for k in range(10)]
    assert w["values"][2] == [5.0] * 10
    e = store.window(site="s1", gateway=None, stream="das", start_ns=now - 10 * S, end_ns=now,
                     ch_start=0, ch_end=2, max_times=5, field="energy")
    assert e["resolution_s"] == 2.0 and e["values"] == [[1.0] * 5, [2.0] * 5, [3.0] * 5]
    # 10 s buckets read history, which lacks the open bucket: its tail comes from raw
    tail = store.window(site="s1", gateway=None, stream="das", start_ns=now - 10 * S,
                        end_ns=now, ch_start=0, ch_end=2, max_times=1, field="energy")
    assert tail["source"] == "history" and tail["values"] == [[1.0], [2.0], [3.0]]
    g2 = store.window(site="s1", gateway="g2", stream="das", start_ns=now - 10 * S, end_ns=now,
                      ch_start=0, ch_end=1, max_times=10)
    assert g2["channels"] == [0, 1] and g2["values"][0] == [None] * 10


def test_unreachable_influx_is_a_retryable_error(influxd: Influxd) -> None:
    store = Store(InfluxClient(influxd.url, timeout=2))
    influxd.stop()
    assert store.ping() is False
    with pytest.raises(InfluxError) as info:
        store.anomalies()
    assert info.value.retryable


def test_before_ingestion_created_the_schema_everything_is_empty(influxd: Influxd) -> None:
    store = Store(InfluxClient(influxd.url))
    assert store.anomalies() == [] and store.fleet() == [] and store.rounds() == []
    assert store.anomaly("x") is None and store.labels("x") == []
    now = time.time_ns()
    w = store.window(site="s1", gateway=None, stream="das", start_ns=now - 60 * S, end_ns=now,
                     ch_start=0, ch_end=3, max_times=10)
    assert w["channels"] == [0, 1, 2, 3] and all(v is None for r in w["values"] for v in r)
    with pytest.raises(UnknownEvent):
        store.add_label("x", label="note", note="", user="u")
