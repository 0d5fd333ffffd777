"""The demo's alerting: its rules file passes `config check`, its webhook receiver records
Alertmanager messages (over real loopback HTTP) and refuses anything else."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud.alerting.service import load_config
from fiberwatch.cli import main
from fiberwatch.demo_alerts import ALERT_TOPIC, WebhookReceiver, write_config


def test_the_rules_send_events_and_drift_to_the_webhook_and_the_topic(tmp_path: Path) -> None:
    path = write_config(tmp_path / "alerts.toml", state_db=tmp_path / "a.sqlite",
                        webhook_url="http://127.0.0.1:9/alerts", min_severity="medium",
                        external_url="http://127.0.0.1:8000/")
    assert main(["config", "check", str(path)]) == 0
    config = load_config(path)
    assert {r.type for r in config.receivers} == {"webhook", "mqtt"}
    assert config.receiver("bus").topic == ALERT_TOPIC
    rules = {r.name: r for r in config.rules}
    assert rules["demo-drift"].matches("demo", "well-a", "low", "drift")
    assert rules["demo-events"].matches("demo", "well-a", "medium", "unknown")
    assert not rules["demo-events"].matches("demo", "well-a", "low", "unknown")
    with pytest.raises(ValueError, match="https"):  # the checks of any alerting file hold
        write_config(tmp_path / "b.toml", state_db=tmp_path / "b.sqlite",
                     webhook_url="http://192.0.2.1/alerts", min_severity="low",
                     external_url="http://127.0.0.1:8000/")


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_receiver_records_alerts_and_refuses_garbage(tmp_path: Path) -> None:
    log = tmp_path / "got.jsonl"
    rx = WebhookReceiver(log).start()
    try:
        assert rx.last_line() == "-"
        alert = {"status": "firing", "labels": {"event_id": "e1", "severity": "high",
                                                "kind": "leak", "site": "demo",
                                                "gateway": "well-a"}}
        assert _post(rx.url, json.dumps({"version": "4", "alerts": [alert]}).encode()) == 200
        for bad in (b"not json", b'{"alerts": 3}', b"[]"):
            assert _post(rx.url, bad) == 400, bad
        assert rx.received == 1
        assert rx.last_line() == "high leak at demo/well-a (firing)"
        (line,) = log.read_text().splitlines()
        assert json.loads(line)["labels"]["event_id"] == "e1"
    finally:
        rx.stop()
