"""Durations, retention policies, ingestion settings and the command line."""

from __future__ import annotations

import os

import pytest

from cloud import schema
from cloud.ingest.config import IngestSettings
from cloud.ingest.service import parser, settings_from_args
from edge_agent.config import BrokerConfig


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400), ("365d", 365 * 86400), ("52w", 52 * 7 * 86400), ("90m", 5400),
    ("INF", 0), ("inf", 0), ("0s", 0), ("24h0m0s", 86400), ("8760h0m0s", 365 * 86400),
    ("1h30m", 5400), ("500ms", 0), ("1.5h", 5400),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert schema.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "1h 2m", "-1h", "24h!"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        schema.parse_duration(text)


def test_retention_bounds() -> None:
    r = schema.Retention(raw="48h", history="2w")
    assert r.seconds("raw") == 2 * 86400 and r.seconds("events") == 0
    for bad in ({"raw": "30m"}, {"raw": "INF"}, {"history": "10m"}):
        with pytest.raises(ValueError):
            schema.Retention(**bad)


def test_settings_validation() -> None:
    # anonymous: a client id of this process; with a login: the login (the broker's client id)
    assert IngestSettings().mqtt_client_id.endswith(f"-{os.getpid()}")
    assert IngestSettings(broker=BrokerConfig(username="ingest")).mqtt_client_id == "ingest"
    assert IngestSettings(client_id="fixed").mqtt_client_id == "fixed"
    for bad in ({"batch_lines": 0}, {"linger_s": 0}, {"buffer_bytes": -1}, {"mqtt_port": 0}):
        with pytest.raises(ValueError):
            IngestSettings(**bad)


def test_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIBERWATCH_INFLUX_PASSWORD", "s3cret")
    args = parser().parse_args(["--mqtt-port", "1999", "--influx-url", "http://h:1",
                                "--influx-username", "ingest", "--raw-retention", "12h",
                                "--buffer-mb", "8"])
    s = settings_from_args(args)
    assert (s.mqtt_port, s.influx_url, s.influx_username, s.influx_password) == (
        1999, "http://h:1", "ingest", "s3cret")
    assert s.retention.raw == "12h" and s.buffer_bytes == 8 << 20
    with pytest.raises(SystemExit):
        parser().parse_args(["--mqtt-port", "x"])
