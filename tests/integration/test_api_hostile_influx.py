"""Hostile query values against the real InfluxDB: the API answers 4xx or 2xx, never 5xx
(each of these was a 502 from an InfluxQL parse error, found by `bench chaos`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud import schema
from cloud.influx import InfluxClient
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from cloud.store import Store
from fiberwatch.services import Influxd

pytestmark = pytest.mark.integration
TOKEN = "viewer-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(influxd: Influxd) -> Iterator[TestClient]:
    influx = InfluxClient(influxd.url)
    schema.ensure_schema(influx)
    settings = CloudSettings(tokens={TOKEN: TokenInfo(name="v", role="viewer")},
                             influx_url=influxd.url)
    with TestClient(create_app(settings, store=Store(influx))) as c:
        yield c


@pytest.mark.parametrize("params", [
    {"dist_max": "-6.057443756799601e+16"}, {"dist_min": "2.39e-240"}, {"dist_min": "1e5"},
    {"model_version": "ew°\n\U000c868f"}, {"model_version": "a\rb"}, {"model_version": "a\\'b"},
    {"gateway": "NULL", "class_hint": "fault", "ch_min": "14883"},
])
def test_hostile_anomaly_filters_are_never_5xx(client: TestClient, params: dict) -> None:
    r = client.get("/api/v1/anomalies", params=params, headers=AUTH)
    assert r.status_code < 500, r.text


@pytest.mark.parametrize("event_id", ["\x9b\r\ub953p\xaa", "a\nb", "x\\y'z", "\x00", "é" * 100])
def test_hostile_event_ids_are_never_5xx(client: TestClient, event_id: str) -> None:
    quoted = urllib.parse.quote(event_id, safe="")  # as a client sends it
    for path in (f"/api/v1/anomalies/{quoted}", f"/api/v1/anomalies/{quoted}/labels"):
        r = client.get(path, headers=AUTH)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)


def test_store_escapes_newlines_and_plain_numbers(influxd: Influxd) -> None:
    influx = InfluxClient(influxd.url)
    schema.ensure_schema(influx)
    store = Store(influx)
    assert store.anomalies(model_version="a\nb", dist_max=-6.05e16, dist_min=2.39e-240) == []
    assert store.anomaly("x\ny") is None
