"""Alerting: rules, de-duplication, re-notify, ack/resolve, audit, and at-least-once delivery
to a real webhook receiver (stdlib http.server on loopback), including one that is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud.alerting.delivery import Dispatcher, WebhookSender
from cloud.alerting.engine import Alerter
from cloud.alerting.state import AlertConflict, AlertNotFound, AlertState
from firmware_configs.alerting import AlertingConfig
from firmware_configs.check import validate_file
from tests.alert_receiver import Receiver, free_port


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        return self.ns


def config(tmp_path: Path, url: str, **rule: Any) -> AlertingConfig:
    return AlertingConfig.model_validate({
        "alerting": {"state_db": str(tmp_path / "alerts.sqlite"), "retry_initial_s": 1.0,
                     "external_url": "http://127.0.0.1:8000/"},
        "receivers": [{"name": "hook", "type": "webhook", "url": url}],
        "rules": [{"name": "r1", "receivers": ["hook"], "min_severity": "medium",
                   "sites": ["well-a"], **rule}]})


def event(eid: str = "e1", severity: str = "medium", kind: str = "leak",
          site: str = "well-a", **kw: Any) -> dict[str, Any]:
    return {"id": eid, "site": site, "gateway": "gw1", "stream": "das", "severity": severity,
            "class_hint": kind, "start_ns": 1_699_999_990_000_000_000, "peak_score": 0.9,
            "dist_start_m": 100.0, "dist_end_m": 120.0, "model_version": "v1",
            "received_ns": 1_699_999_999_000_000_000, **kw}


def parts(tmp_path: Path, url: str, clock: Clock, **rule: Any
          ) -> tuple[AlertState, Alerter, Dispatcher]:
    cfg = config(tmp_path, url, **rule)
    state = AlertState(cfg.alerting.state_db, clock=clock)
    return state, Alerter(cfg, state), Dispatcher(cfg, state, {"hook": WebhookSender(
        cfg.receivers[0])})


def test_fires_once_per_event_and_renotifies_on_severity_change(tmp_path: Path) -> None:
    clock = Clock()
    with Receiver() as rx:
        state, alerter, disp = parts(tmp_path, rx.url, clock)
        assert alerter.observe(event()) == "fired"
        assert alerter.observe(event()) == "unchanged"  # the same stored event, read again
        assert alerter.observe(event("low", severity="low")) == "unmatched"
        assert alerter.observe(event("other", site="well-b")) == "unmatched"
        disp.pass_once()
        assert alerter.observe(event(severity="high")) == "renotified"
        disp.pass_once()
        bodies = rx.wait_for(2)
    assert len(bodies) == 2
    first, second = bodies
    assert first["version"] == "4" and first["status"] == "firing"
    assert first["receiver"] == "hook" and len(first["alerts"]) == 1
    a = first["alerts"][0]
    assert a["labels"]["event_id"] == "e1" and a["labels"]["severity"] == "medium"
    assert a["labels"]["kind"] == "leak" and a["endsAt"] == "0001-01-01T00:00:00Z"
    assert a["generatorURL"] == "http://127.0.0.1:8000/#event=e1"
    assert second["alerts"][0]["labels"]["severity"] == "high"
    assert state.queue_depth() == {}
    actions = [r["action"] for r in state.audit()]
    assert actions == ["severity_changed", "fire"]


def test_kind_rule_and_classifier_kind(tmp_path: Path) -> None:
    state, alerter, _ = parts(tmp_path, "http://127.0.0.1:9/x", Clock(), kinds=["sand"])
    assert alerter.observe(event("a", kind="leak")) == "unmatched"
    classified = {**event("b", kind="unknown"), "kind": "sand", "kind_confidence": 0.8}
    assert alerter.observe(classified) == "fired"
    assert alerter.observe(event("c", kind="sand", merged_into="b")) == "merged"
    assert [a["event_id"] for a in state.alerts()] == ["b"]


def test_down_receiver_loses_nothing_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    state, alerter, disp = parts(tmp_path, url, clock)
    for i in range(3):
        alerter.observe(event(f"e{i}"))
    assert not disp.pass_once()  # connection refused: the head waits, the others keep order
    assert state.queue_depth() == {"hook": 3}
    clock.ns += 10**9 // 2
    disp.pass_once()  # the retry is not due yet: no attempt
    assert state.due()[0].attempts == 1
    state.close()
    # restart: a new process state over the same file, and the receiver comes up
    clock.ns += 5 * 10**9
    with Receiver(port=port) as rx:
        state, alerter, disp = parts(tmp_path, url, clock)
        while disp.pass_once():
            pass
        bodies = rx.wait_for(3)
    assert [b["alerts"][0]["labels"]["event_id"] for b in bodies] == ["e0", "e1", "e2"]
    assert state.queue_depth() == {}
    attempts = sorted(d["attempts"] for d in state.deliveries())
    assert attempts == [1, 1, 2]


def test_error_status_is_retried(tmp_path: Path) -> None:
    clock = Clock()
    with Receiver(status=503) as rx:
        state, alerter, disp = parts(tmp_path, rx.url, clock)
        alerter.observe(event())
        disp.pass_once()
        assert state.queue_depth() == {"hook": 1} and "HTTP 503" in str(
            state._db.execute("SELECT last_error FROM outbox").fetchone()[0])
        rx.status = 200
        clock.ns += 60 * 10**9
        disp.pass_once()
        assert len(rx.wait_for(1)) == 1
    assert state.queue_depth() == {}


def test_acknowledge_resolve_and_audit(tmp_path: Path) -> None:
    clock = Clock()
    with Receiver() as rx:
        state, alerter, disp = parts(tmp_path, rx.url, clock)
        alerter.observe(event())
        with pytest.raises(AlertNotFound):
            alerter.transition("nope", "acknowledged", actor="alice")
        acked = alerter.transition("e1", "acknowledged", actor="alice", note="on it")
        assert acked["status"] == "acknowledged"
        with pytest.raises(AlertConflict):
            alerter.transition("e1", "acknowledged", actor="bob")
        alerter.transition("e1", "resolved", actor="bob")
        assert alerter.observe(event(severity="critical")) == "unchanged"  # stays resolved
        while disp.pass_once():
            pass
        bodies = rx.wait_for(3)
    assert [b["status"] for b in bodies] == ["firing", "firing", "resolved"]
    assert bodies[1]["alerts"][0]["annotations"]["acknowledged"] == "true"
    assert bodies[2]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    audit = [(r["actor"], r["action"], r["detail"]) for r in state.audit(event_id="e1")]
    assert audit == [("bob", "resolve", ""), ("alice", "acknowledge", "on it"),
                     ("system", "fire", "rule r1")]


def test_config_check_names_the_field(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[alerting]\n[[receivers]]\nname = "x"\ntype = "webhook"\n'
                 'url = "http://alerts.example.com/hook"\n'
                 '[[rules]]\nname = "r"\nreceivers = ["y"]\nkinds = ["lek"]\n')
    result = validate_file(f)
    assert result.kind == "alerting"
    text = "\n".join(result.problems)
    assert "receivers.0: url must be https" in text
    assert "rules.0.kinds: unknown kind(s) ['lek']" in text
    good = Path(__file__).parents[2] / "firmware_configs" / "alerts" / "alerts.toml"
    assert validate_file(good).ok
