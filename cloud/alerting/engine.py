"""Events to alerts: rule matching, de-duplication by event id, re-notify on severity change.

`Alerter.observe(event)` is idempotent: the same stored event read again changes nothing,
so the feed may re-read a margin of events. A new matching event fires an alert (one per
event id; the first matching rule, in file order, names its receivers); a later version of
the same event with another severity queues a new notification; a resolved alert stays
resolved. Payloads follow Alertmanager's webhook JSON (version 4), so any receiver that
takes Alertmanager's webhooks takes ours; the MQTT topic gets the same JSON.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from cloud.alerting.state import AlertState
from firmware_configs.alerting import AlertingConfig, Rule

log = logging.getLogger(__name__)
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" time


def event_kind(event: dict[str, Any]) -> str:
    """The event's kind: the classifier's ``kind`` when present, else its ``class_hint``."""
    return str(event.get("kind") or event.get("class_hint") or "unknown")


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def alert_payload(alert: dict[str, Any], *, status: str, receiver: str,
                  external_url: str = "") -> dict[str, Any]:
    """One alert as Alertmanager's webhook message (``version`` "4", one alert).

    `status` is the alert's own status: "firing", "acknowledged" or "resolved";
    Alertmanager knows only firing/resolved, so an acknowledged alert is "firing" with
    ``annotations.acknowledged`` set.
    """
    e = alert["event"]
    labels = {"alertname": "FiberwatchAnomaly", "rule": alert["rule"], "site": alert["site"],
              "gateway": alert["gateway"], "kind": alert["kind"], "severity": alert["severity"],
              "event_id": alert["event_id"], "stream": str(e.get("stream", ""))}
    am_status = "resolved" if status == "resolved" else "firing"
    where = (f"model {e.get('model_version')}: " + ", ".join(
        f"{k} {v}" for k, v in e["drift"].items()) if "drift" in e else
        f"at {e.get('dist_start_m', 0):.0f}-{e.get('dist_end_m', 0):.0f} m")
    annotations = {
        "summary": f"{alert['severity']} {alert['kind']} on {alert['site']}/{alert['gateway']} "
                   f"{where}",
        "peak_score": f"{float(e.get('peak_score', 0.0)):.3f}",
        "model_version": str(e.get("model_version", "")),
        "acknowledged": "true" if status == "acknowledged" else "false",
    }
    base = external_url.rstrip("/")
    fingerprint = hashlib.sha256(alert["event_id"].encode()).hexdigest()[:16]
    item = {"status": am_status, "labels": labels, "annotations": annotations,
            "startsAt": rfc3339(int(e.get("start_ns") or alert["fired_ns"])),
            "endsAt": rfc3339(alert["updated_ns"]) if am_status == "resolved" else ZERO_TIME,
            "generatorURL": f"{base}/#event={alert['event_id']}" if base else "",
            "fingerprint": fingerprint}
    return {"version": "4", "groupKey": f"{{}}:{{event_id=\"{alert['event_id']}\"}}",
            "truncatedAlerts": 0, "status": am_status, "receiver": receiver,
            "groupLabels": {"event_id": alert["event_id"]}, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": base, "alerts": [item]}


class Alerter:
    """Match events against the rules and record/queue what must be notified."""

    def __init__(self, config: AlertingConfig, state: AlertState) -> None:
        self.config, self.state = config, state
        self.fired = self.renotified = self.unchanged = self.unmatched = 0

    def rule_for(self, event: dict[str, Any]) -> Rule | None:
        kind = event_kind(event)
        return next((r for r in self.config.rules if r.matches(
            str(event.get("site")), str(event.get("gateway")), str(event.get("severity")),
            kind)), None)

    def observe(self, event: dict[str, Any]) -> str:
        """Handle one stored event; returns what happened (fired, renotified, unchanged,
        unmatched, merged)."""
        event_id = str(event["id"])
        if event.get("merged_into"):
            self.unchanged += 1
            return "merged"  # withdrawn: its anomaly is alerted under the event it joined
        known = self.state.alert(event_id)
        severity, kind = str(event.get("severity")), event_kind(event)
        if known is not None:
            if known["severity"] == severity or known["status"] == "resolved":
                self.unchanged += 1
                return "unchanged"
            alert = {**known, "severity": severity, "kind": kind, "event": event,
                     "updated_ns": self.state.now()}
            self._notify(alert, alert["receivers"], "severity_changed",
                         f"{known['severity']} -> {severity}")
            self.renotified += 1
            return "renotified"
        rule = self.rule_for(event)
        if rule is None:
            self.unmatched += 1
            return "unmatched"
        now = self.state.now()
        alert = {"event_id": event_id, "rule": rule.name, "receivers": list(rule.receivers),
                 "site": str(event.get("site")), "gateway": str(event.get("gateway")),
                 "kind": kind, "severity": severity, "status": "firing", "event": event,
                 "fired_ns": now, "updated_ns": now}
        self._notify(alert, rule.receivers, "fire", f"rule {rule.name}")
        self.fired += 1
        return "fired"

    def _notify(self, alert: dict[str, Any], receivers: list[str], action: str,
                detail: str) -> None:
        status = alert["status"] if alert["status"] != "resolved" else "firing"
        notes = [(r, alert_payload(alert, status=status, receiver=r,
                                   external_url=self.config.alerting.external_url))
                 for r in receivers]
        self.state.fire(alert, notes, action=action, detail=detail)
        log.info("event=alert_%s id=%s severity=%s kind=%s receivers=%s", action,
                 alert["event_id"], alert["severity"], alert["kind"], ",".join(receivers))

    def transition(self, event_id: str, to: str, *, actor: str, note: str = "") -> dict[str, Any]:
        """Acknowledge or resolve; receivers of the alert hear about it (queued)."""
        known = self.state.alert(event_id)
        notes: list[tuple[str, dict[str, Any]]] = []
        if known is not None:
            after = {**known, "updated_ns": self.state.now()}
            notes = [(r, alert_payload(after, status=to, receiver=r,
                                       external_url=self.config.alerting.external_url))
                     for r in known["receivers"]]
        return self.state.transition(event_id, to, actor=actor, note=note, notes=notes)
