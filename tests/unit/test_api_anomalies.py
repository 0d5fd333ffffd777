"""/anomalies, /anomalies/{id}, labels and /window over an in-memory store."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api.memory import MemoryStore
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from edge_agent.events import Event, event_id
from edge_agent.summary import FeatureSummary

VIEWER, OPERATOR = "viewer-token-0123456789abcdef", "operator-token-0123456789abcdef"
T0 = 1_780_000_000 * 10**9  # 2026-05-28T20:26:40Z
S = 10**9


def _event(gateway: str, start_s: int, ch: int, severity: str = "high", **kw: Any) -> Event:
    start = T0 + start_s * S
    fields: dict[str, Any] = dict(
        id=event_id("site-a", gateway, "das", start, ch), site="site-a", gateway=gateway,
        stream="das", start_ns=start, end_ns=start + 20 * S, ch_start=ch, ch_end=ch + 15,
        dist_start_m=ch * 1.0, dist_end_m=ch + 15.0, peak_score=2.0, mean_score=1.5,
        threshold=1.0, severity=severity, class_hint="leak", n_windows=10, model_version="m1",
        model_hash="ab" * 32, detected_ns=start + 21 * S)
    fields.update(kw)
    return Event(**fields)


EVENTS = [_event("gw-1", 100, 64), _event("gw-1", 300, 200, "low"), _event("gw-2", 200, 8)]


def make_store() -> MemoryStore:
    store = MemoryStore()
    for e in EVENTS:
        store.add_event(e)
    for k in range(0, 400):
        store.add_summary(FeatureSummary(
            site="site-a", gateway="gw-1", stream="das", t_ns=T0 + k * S, ch_start=0,
            group_size=8, score=[0.1 * (g % 5) for g in range(8)], energy=[-1.0] * 8,
            threshold=[1.0] * 8, model_version="m1"))
    return store


@pytest.fixture
def store() -> MemoryStore:
    return make_store()


@pytest.fixture
def client(store: MemoryStore) -> Iterator[TestClient]:
    settings = CloudSettings(tokens={VIEWER: TokenInfo(name="vera", role="viewer"),
                                     OPERATOR: TokenInfo(name="otto", role="operator")},
                             window_max_channels=512, window_max_span_s=3600)
    with TestClient(create_app(settings, store=store)) as c:
        c.headers["Authorization"] = f"Bearer {VIEWER}"
        yield c


def test_anomalies_newest_first_with_pagination(client: TestClient) -> None:
    body = client.get("/api/v1/anomalies", params={"limit": 2}).json()
    assert [e["id"] for e in body["items"]] == [EVENTS[1].id, EVENTS[2].id]
    assert body["next_offset"] == 2
    rest = client.get("/api/v1/anomalies", params={"limit": 2, "offset": 2}).json()
    assert [e["id"] for e in rest["items"]] == [EVENTS[0].id]
    assert rest["next_offset"] is None
    assert rest["items"][0]["labels"] == []


@pytest.mark.parametrize(("params", "ids"), [
    ({"gateway": "gw-2"}, [2]),
    ({"severity": "low"}, [1]),
    ({"ch_min": 60, "ch_max": 100}, [0]),
    ({"start": str(T0 + 250 * S)}, [1]),
    ({"end": "2026-05-28T20:30:00Z"}, [2, 0]),
    ({"dist_min": 150.5}, [1]),
])
def test_anomaly_filters(client: TestClient, params: dict, ids: list[int]) -> None:
    items = client.get("/api/v1/anomalies", params=params).json()["items"]
    assert [e["id"] for e in items] == [EVENTS[i].id for i in ids]


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"limit": 1001}, 422, "less than or equal to 1000"),
    ({"limit": 0}, 422, "greater than or equal to 1"),
    ({"offset": -1}, 422, "greater than or equal to 0"),
    ({"severity": "extreme"}, 422, "'low', 'medium', 'high' or 'critical'"),
    ({"stream": "xyz"}, 422, "'das' or 'dts'"),
    ({"site": "a/b"}, 422, "must match"),
    ({"ch_min": "many"}, 422, "valid integer"),
    ({"start": "yesterday"}, 400, "start: 'yesterday' is not a time"),
    ({"end": "2026-05-28T20:30:00"}, 400, "has no time zone"),
    ({"start": "now", "end": "now-1h"}, 400, "end"),
    ({"ch_min": 10, "ch_max": 5}, 400, "ch_max (5) is below ch_min (10)"),
    ({"dist_min": 10, "dist_max": 5}, 400, "dist_max"),
])
def test_anomaly_params_are_validated(client: TestClient, params: dict, status: int,
                                      reason: str) -> None:
    r = client.get("/api/v1/anomalies", params=params)
    assert r.status_code == status
    assert reason in str(r.json()["detail"])


def test_detail_has_the_waterfall_around_the_event(client: TestClient) -> None:
    body = client.get(f"/api/v1/anomalies/{EVENTS[0].id}").json()
    assert body["event"]["id"] == EVENTS[0].id
    wf = body["waterfall"]
    assert wf["ch_start"] == 64 - 32 and wf["ch_end"] == 64 + 15 + 32
    assert wf["times_ns"][0] <= EVENTS[0].start_ns - 30 * S
    assert wf["times_ns"][-1] >= EVENTS[0].end_ns + 30 * S - wf["resolution_s"] * S
    assert any(v is not None for row in wf["values"] for v in row)


def test_detail_reports_a_waterfall_the_store_refuses(client: TestClient,
                                                      store: MemoryStore) -> None:
    def refuse(**_: Any) -> dict:
        raise ValueError("no features kept that far back")

    store.window = refuse  # type: ignore[method-assign]
    body = client.get(f"/api/v1/anomalies/{EVENTS[0].id}").json()
    assert body["waterfall"] is None
    assert body["waterfall_error"] == "no features kept that far back"


def test_unknown_anomaly_is_404(client: TestClient) -> None:
    r = client.get("/api/v1/anomalies/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.get("/api/v1/anomalies/nope/labels").status_code == 404


def test_operator_labels_an_event(client: TestClient) -> None:
    url = f"/api/v1/anomalies/{EVENTS[0].id}/labels"
    op = {"Authorization": f"Bearer {OPERATOR}"}
    r = client.post(url, json={"label": "confirmed", "note": "crew found a weep"}, headers=op)
    assert r.status_code == 201
    assert r.json()["user"] == "otto"  # from the token, not the request
    assert client.get(url).json()["items"][0]["note"] == "crew found a weep"
    assert client.get(f"/api/v1/anomalies/{EVENTS[0].id}").json()["event"]["labels"][0][
        "label"] == "confirmed"
    assert client.post(url, json={"label": "maybe"}, headers=op).status_code == 422
    assert client.post(url, json={"label": "note", "note": "x" * 2001},
                       headers=op).status_code == 422
    assert client.post("/api/v1/anomalies/nope/labels", json={"label": "note"},
                       headers=op).status_code == 404


WINDOW = {"site": "site-a", "gateway": "gw-1", "stream": "das", "start": str(T0),
          "end": str(T0 + 300 * S), "ch_start": 0, "ch_end": 63}


def test_window_json(client: TestClient) -> None:
    body = client.get("/api/v1/window", params={**WINDOW, "max_times": 30}).json()
    assert body["channels"] == list(range(0, 64, 8))
    assert len(body["times_ns"]) <= 30 and body["resolution_s"] == 10
    assert len(body["values"]) == 8 and len(body["values"][0]) == len(body["times_ns"])
    by_res = client.get("/api/v1/window", params={**WINDOW, "resolution": 60}).json()
    assert by_res["resolution_s"] == 60


def test_window_csv(client: TestClient) -> None:
    r = client.get("/api/v1/window", params={**WINDOW, "max_times": 30, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["time", "time_ns", "ch_0"] and len(rows[0]) == 2 + 8
    assert rows[1][0] == "2026-05-28T20:26:40.000000000Z" and rows[1][1] == str(T0)
    assert float(rows[1][3]) == pytest.approx(0.1, abs=1e-6)
    assert len(rows) == 1 + 30


@pytest.mark.parametrize(("change", "reason"), [
    ({"end": str(T0 + 7200 * S)}, "time span 7200 s exceeds the limit of 3600 s"),
    ({"ch_end": 1000}, "1001 channels exceed the limit of 512"),
    ({"max_times": 6000}, "6000 time buckets exceed the limit of 5000"),
    ({"resolution": 0.01}, "30000 time buckets exceed the limit"),
    ({"max_times": 10, "resolution": 5}, "max_times or resolution, not both"),
    ({"end": str(T0)}, "end must be after start"),
    ({"ch_start": 10, "ch_end": 5}, "ch_end (5) is below ch_start (10)"),
    ({"start": "noon"}, "start: 'noon' is not a time"),
])
def test_window_bounds_are_400_with_a_reason(client: TestClient, change: dict,
                                             reason: str) -> None:
    r = client.get("/api/v1/window", params={**WINDOW, **change})
    assert r.status_code == 400
    assert reason in r.json()["detail"]


def test_window_passes_the_store_reason_on(client: TestClient, store: MemoryStore) -> None:
    def refuse(**_: Any) -> dict:
        raise ValueError("no such stream on this gateway")

    store.window = refuse  # type: ignore[method-assign]
    r = client.get("/api/v1/window", params=WINDOW)
    assert r.status_code == 400 and r.json()["detail"] == "no such stream on this gateway"


def test_window_requires_its_range(client: TestClient) -> None:
    r = client.get("/api/v1/window", params={"site": "site-a", "stream": "das"})
    assert r.status_code == 422
    missing = {e["loc"][-1] for e in r.json()["detail"]}
    assert missing == {"start", "end", "ch_start", "ch_end"}
