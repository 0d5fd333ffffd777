"""The API over the real Store and a real influxd, points written as ingestion writes them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cloud import codec, schema
from cloud.influx import InfluxClient
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from edge_agent.events import Event, event_id
from fiberwatch.services import Influxd

pytestmark = pytest.mark.integration

VIEWER, OPERATOR = "viewer-token-0123456789abcdef", "operator-token-0123456789abcdef"
S = 10**9
NOW = (time.time_ns() // S - 5) * S
GROUPS = 16  # 16 groups x 8 channels


def _event(start_ns: int, ch: int, severity: str) -> Event:
    return Event(
        id=event_id("site-a", "gw-1", "das", start_ns, ch), site="site-a", gateway="gw-1",
        stream="das", start_ns=start_ns, end_ns=start_ns + 10 * S, ch_start=ch, ch_end=ch + 7,
        dist_start_m=ch * 1.02, dist_end_m=(ch + 7) * 1.02, peak_score=3.5, mean_score=2.25,
        threshold=1.0, severity=severity, class_hint="leak", n_windows=5, model_version="m1",
        model_hash="ef" * 32, detected_ns=start_ns + 11 * S)


EVENTS = [_event(NOW - 60 * S, 40, "critical"), _event(NOW - 30 * S, 96, "low")]


def _health(received_ns: int) -> dict:
    return {"schema": 1, "site": "site-a", "gateway": "gw-1", "t_ns": received_ns,
            "status": "ok", "uptime_s": 100.0, "frames_per_s": 50.0, "samples_per_s": 51200.0,
            "queue_depth": 0, "drops": {"queue_full": 2}, "gaps": 1,
            "latency_ms": {"p50": 4.0, "p99": 12.5},
            "latency_ms_by_stream": {"das": {"p50": 3.0, "p99": 8.0},
                                     "dts": {"p50": 2512.0, "p99": 4030.0}},
            "outbox_depth": 0, "outbox_evicted": 0,
            "model_version": "m1", "model_hash": "ef" * 32, "rss_mb": 120.0,
            "fa_mutes_active": 2, "fa_muted_windows": 37, "fa_muted_groups": 52}


def _populate(client: InfluxClient) -> None:
    schema.ensure_schema(client)
    events = [codec.event_line(e, e.detected_ns + S // 10) for e in EVENTS]
    client.write(schema.DB, events + events, rp=schema.RP_EVENTS)  # twice: stored once
    features = []
    for k in range(120):
        score = np.full(GROUPS, 0.25)
        if NOW - 60 * S <= NOW - (120 - k) * S < NOW - 50 * S:
            score[5] = 3.5  # channels 40..47 during the first event
        features.append(codec.features_line(
            schema.FEATURES, site="site-a", gateway="gw-1", stream="das",
            t_ns=NOW - (120 - k) * S, ch_start=0, group_size=8, score=score,
            energy=np.full(GROUPS, -1.5), threshold=np.ones(GROUPS), model_version="m1",
            flagged=int((score > 1).sum())))
    client.write(schema.DB, features, rp=schema.RP_RAW)
    health, fleet = codec.health_lines(_health(time.time_ns()), time.time_ns())
    client.write(schema.DB, [health], rp=schema.RP_HISTORY)
    client.write(schema.DB, [fleet], rp=schema.RP_EVENTS)
    client.write(schema.DB, [
        f'fl_round,run_id=r1,strategy=FedAvg round={i}i,participants=2i,failures=0i,'
        f'loss={0.1 / i},auc=0.9,bytes_up=1000i,bytes_down=1000i,duration_s=2.0,'
        f'model_version="fl-{i}" {NOW - (10 - i) * S}' for i in (1, 2, 3)], rp=schema.RP_HISTORY)


@pytest.fixture
def api(influxd: Influxd) -> Iterator[TestClient]:
    with InfluxClient(influxd.url) as client:
        _populate(client)
    settings = CloudSettings(influx_url=influxd.url, tokens={
        VIEWER: TokenInfo(name="vera", role="viewer"),
        OPERATOR: TokenInfo(name="otto", role="operator")})
    with TestClient(create_app(settings)) as c:  # the lifespan builds the real Store
        c.headers["Authorization"] = f"Bearer {VIEWER}"
        yield c


def test_events_labels_and_waterfall_through_the_api(api: TestClient) -> None:
    items = api.get("/api/v1/anomalies").json()["items"]
    assert [e["id"] for e in items] == [EVENTS[1].id, EVENTS[0].id]
    assert {k: items[1][k] for k in EVENTS[0].to_dict()} == EVENTS[0].to_dict()
    assert items[1]["labels"] == []
    only = api.get("/api/v1/anomalies", params={"severity": "critical", "ch_max": 50}).json()
    assert [e["id"] for e in only["items"]] == [EVENTS[0].id]

    r = api.post(f"/api/v1/anomalies/{EVENTS[0].id}/labels",
                 json={"label": "false_alarm", "note": "pump start"},
                 headers={"Authorization": f"Bearer {OPERATOR}"})
    assert r.status_code == 201, r.text
    detail = api.get(f"/api/v1/anomalies/{EVENTS[0].id}").json()
    assert [(x["label"], x["user"]) for x in detail["event"]["labels"]] == [("false_alarm", "otto")]
    wf = detail["waterfall"]
    row = wf["channels"].index(40)
    assert max(v for v in wf["values"][row] if v is not None) == pytest.approx(3.5)
    quiet = [v for v in wf["values"][row + 2] if v is not None]
    assert quiet and max(quiet) == pytest.approx(0.25)
    assert api.post("/api/v1/anomalies/nope/labels", json={"label": "note"},
                    headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 404


def test_window_csv_fleet_rounds_and_health(api: TestClient) -> None:
    r = api.get("/api/v1/window", params={
        "site": "site-a", "stream": "das", "start": str(NOW - 120 * S), "end": str(NOW),
        "ch_start": 0, "ch_end": 127, "max_times": 120, "format": "csv"})
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    assert lines[0].split(",")[:4] == ["time", "time_ns", "ch_0", "ch_8"]
    assert len(lines) == 1 + 120 and lines[1].split(",")[2] == "0.25"
    gw = api.get("/api/v1/fleet").json()["items"][0]
    assert (gw["gateway"], gw["status"], gw["latency_p99_ms"], gw["drops_total"]) == (
        "gw-1", "ok", 12.5, 2)
    assert gw["latency_p99_ms_by_stream"] == {"das": 8.0, "dts": 4030.0}
    assert gw["latency_p50_ms_by_stream"] == {"das": 3.0, "dts": 2512.0}
    assert (gw["fa_mutes_active"], gw["fa_muted_windows"], gw["fa_muted_groups"]) == (2, 37, 52)
    rounds = api.get("/api/v1/rounds").json()["items"]
    assert [x["round"] for x in rounds] == [3, 2, 1]
    health = api.get("/api/v1/health", headers={"Authorization": ""})
    assert health.status_code == 200
    assert (health.json()["influx"], health.json()["ingestion"]) == ("ok", "ok")


def test_influx_outage_is_503(api: TestClient, influxd: Influxd) -> None:
    influxd.kill()
    r = api.get("/api/v1/anomalies")
    assert r.status_code == 503 and r.json()["detail"].startswith("storage unavailable")
    assert api.get("/api/v1/health").json()["influx"] == "unreachable"
