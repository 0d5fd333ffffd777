"""The operator's loop end to end (issue 16), on the whole system started by the demo launcher
(TLS broker with logins and the ACL, influxd, ingestion, alerting, the label publisher, the
API and dashboard, Flower, three gateway agents, the simulator with a benign valve stroking
every `PERIOD_S` on well A's `VALVE` channels, and a leak on well A repeated every `LEAK_EVERY_S`):

1. the anomaly, a valve stroke, raises an alert that reaches a real webhook receiver started
   by this test within 5 s of the stroke's onset (the issue's requirement; latency printed),
   and the same alert goes out on the MQTT alert topic under the ``alerting`` login;
2. an operator acknowledges it in the dashboard (real Chromium): the receiver hears about it,
   the audit trail names the operator;
3. the operator labels the event a false alarm in the dashboard; the API serves the label,
   the demo's label publisher (``labels`` login, TLS) delivers it to well A's gateway;
4. the next federated round runs over the wells with their labels and every gateway serves
   its model (`next_federated_round`);
5. the same pattern no longer alerts: later valve strokes raise no event on well A's valve
   channels (recall after a label round: tests/integration/test_fl_labels.py).

Every dashboard step fails on any console error.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fiberwatch import demo
from fiberwatch.bench._security_probe import Probe, connect
from fiberwatch.demo_alerts import ALERT_TOPIC
from fiberwatch.demo_status import StatusBoard
from tests.alert_receiver import Receiver
from tests.integration import _chromium
from tests.integration.test_end_to_end import _poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNELS = 64
LEAK_CHANNEL = 12
LEAK_ONSET_S = 40.0
LEAK_EVERY_S = 30.0  # after the first: more leaks (on other channels), some after the round
VALVE = (40, 47)  # well A's channels where the valve sings (one threshold group)
#: loud enough that every stroke clears the demo's short-warm-up adaptive thresholds (at 1,
#: ~3 x the background, some runs' thresholds hid it: the test then had no alert to label)
VALVE_INTENSITY = 3.0
VALVE_ONSET_S, PERIOD_S = 45.0, 15.0  # after the gateways warm up
STROKES_AFTER = 3  # valve strokes watched after the round
ALERT_WITHIN_S = 5.0  # issue 16: anomaly -> alert at the webhook
ANOMALY_GATEWAY = "well-a"


@dataclass
class OperatorLoop:
    """The running system, the test's webhook receiver, and what the steps found."""

    run: demo.DemoRun
    opts: demo.DemoOptions
    receiver: Receiver
    onset_ns: int  # the valve's first stroke
    bus: Probe  # the read-only `viewer` login, subscribed to the alert topic
    event_id: str = ""  # the cloud's id of the anomaly's event (the alert's event_id label)
    event: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id, as first read
    valve_peak: float = float("nan")  # the valve group's highest score in an alerting stroke

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.run.api_url}/api/v1/{path}", data=data,
            headers={"Authorization": f"Bearer {self.run.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stored(self, event_id: str) -> dict[str, Any]:
        """A stored event (read once: where and when it started does not change)."""
        if event_id not in self.events:
            try:
                self.events[event_id] = self.api(f"anomalies/{event_id}")["event"]
            except urllib.error.HTTPError as exc:  # not stored yet, or withdrawn (merged)
                if exc.code != 404:
                    raise
                return {}
        return self.events[event_id]

    def poll(self, what: str, fn: Any, timeout: float, interval: float = 0.1) -> Any:
        try:
            return _poll(what, fn, timeout, self.run, interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- alerts at the webhook\n{self.seen()}") from None

    def seen(self) -> str:
        """The firing alerts the receiver took and their events (for a failure message)."""
        out = []
        with self.receiver.got:
            got = list(zip(self.receiver.bodies, self.receiver.received_ns, strict=True))
        for body, at in got:
            for a in body["alerts"]:
                e = self.events.get(a["labels"].get("event_id", ""), {})
                out.append(f"{(at - self.run.t0_ns) / 1e9:7.1f} s {a['status']} "
                           f"{a['labels'].get('gateway')} {a['labels'].get('kind')} "
                           f"ch {e.get('ch_start')}-{e.get('ch_end')} start "
                           f"{(e.get('start_ns', self.run.t0_ns) - self.run.t0_ns) / 1e9:.1f} s")
        return "\n".join(out)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[OperatorLoop]:
    with Receiver() as rx:
        opts = demo.DemoOptions(
            data_dir=tmp_path / "demo", seconds=None, channels=CHANNELS, api_port=0,
            fl_after_s=float("inf"), fl_rounds=1, leak_channel=LEAK_CHANNEL,
            leak_onset_s=LEAK_ONSET_S, leak_every_s=LEAK_EVERY_S, train_seconds=10.0,
            canary_window_s=15.0, alert_webhook=rx.url, alert_min_severity="low",
            valve=f"{ANOMALY_GATEWAY}:{VALVE[0]}-{VALVE[1]}", valve_onset_s=VALVE_ONSET_S,
            valve_period_s=PERIOD_S, valve_intensity=VALVE_INTENSITY)
        run = demo.start(opts)
        bus = connect(run.broker.port, run.mqtt.ca, "viewer",
                      run.mqtt.password_file("viewer").read_text().strip())
        try:
            assert bus.connected, bus.reason
            bus.client.subscribe(f"{ALERT_TOPIC}/#", qos=1)  # the valve starts 45 s later
            yield OperatorLoop(run, opts, rx, run.t0_ns + int(VALVE_ONSET_S * 1e9), bus)
        finally:
            bus.close()
            demo.stop(run)


def on_the_anomaly(loop: OperatorLoop, e: dict[str, Any]) -> bool:
    """Whether a stored event is the valve's: on its gateway and channels, after its onset."""
    return bool(e) and (e["gateway"] == ANOMALY_GATEWAY and e["ch_start"] <= VALVE[1]
            and e["ch_end"] >= VALVE[0] and e["start_ns"] >= loop.onset_ns - 2e9)


def on_a_leak(e: dict[str, Any], onset_ns: int, channel: int) -> bool:
    """Whether a stored event is the leak's on well A at ``channel`` from ``onset_ns``."""
    return bool(e) and (e["gateway"] == ANOMALY_GATEWAY and e["ch_start"] - 5 <= channel
                        <= e["ch_end"] + 5 and onset_ns - 2e9 <= e["start_ns"]
                        <= onset_ns + LEAK_EVERY_S * 1e9 / 2)


def stroke_onset_ns(loop: OperatorLoop, start_ns: int) -> int:
    """The onset of the valve stroke an event that started at ``start_ns`` belongs to."""
    k = max(0, int((start_ns - loop.onset_ns + 1e9) // (PERIOD_S * 1e9)))
    return loop.onset_ns + int(k * PERIOD_S * 1e9)


def leaks_ns(loop: OperatorLoop) -> list[tuple[int, int]]:
    """The repeated leaks' ``(onset ns, channel)`` (`fiberwatch.demo.repeated_leaks`)."""
    return [(loop.run.t0_ns + int(t * 1e9), ch) for t, ch in demo.repeated_leaks(loop.opts)]


def firing(loop: OperatorLoop) -> list[tuple[dict[str, Any], int]]:
    """Every firing alert (not drift) the receiver took for well A, and when."""
    with loop.receiver.got:
        got = list(zip(loop.receiver.bodies, loop.receiver.received_ns, strict=True))
    return [(a, at) for body, at in got for a in body["alerts"]
            if (a["labels"]["gateway"], a["labels"]["kind"] == "drift", a["status"])
            == (ANOMALY_GATEWAY, False, "firing")]


def _alert_on(loop: OperatorLoop, which: Any) -> tuple[dict[str, Any], int] | None:
    """The first firing alert whose stored event ``which(event)`` picks, and when."""
    for a, at in firing(loop):
        if which(loop.stored(a["labels"]["event_id"])):
            return a, at
    return None


def _anomaly_alert(loop: OperatorLoop) -> tuple[dict[str, Any], int] | None:
    """The first firing alert the receiver took for the anomaly's event, and when."""
    return _alert_on(loop, lambda e: on_the_anomaly(loop, e))


def alert_reaches_the_webhook(loop: OperatorLoop) -> None:
    """Step 1: the anomaly's alert at the test's receiver, within 5 s of the onset."""
    alert, at_ns = loop.poll("the anomaly's alert at the webhook",
                             lambda: _anomaly_alert(loop), VALVE_ONSET_S + 90)
    loop.event_id = alert["labels"]["event_id"]
    loop.event = loop.api(f"anomalies/{loop.event_id}")["event"]
    onset = stroke_onset_ns(loop, loop.event["start_ns"])
    loop.latency = {"onset_to_webhook_s": (at_ns - onset) / 1e9,
                    "detected_to_webhook_s": (at_ns - loop.event["detected_ns"]) / 1e9,
                    "stored_to_webhook_s": (at_ns - loop.event["received_ns"]) / 1e9}
    print(f"anomaly onset -> alert at the webhook: {loop.latency}")
    assert loop.latency["onset_to_webhook_s"] <= ALERT_WITHIN_S, loop.latency
    assert alert["annotations"]["acknowledged"] == "false"

    def on_the_bus() -> bool:  # published by the `alerting` login, read by `viewer`
        return any(json.loads(p)["alerts"][0]["labels"]["event_id"] == loop.event_id
                   for t, p in list(loop.bus.received) if t == ALERT_TOPIC)

    loop.poll("the alert on the MQTT alert topic", on_the_bus, 30)
    board = StatusBoard(loop.run)  # the demo's status figures: both receivers delivered
    loop.poll("both deliveries in the demo's status",
              lambda: {"demo-webhook", "bus"} <= set(board.alerts()["receivers"]), 30, 1.0)


def acknowledge_in_the_dashboard(loop: OperatorLoop, page: Any) -> None:
    """Step 2: the Acknowledge button of the alert; the receiver and the audit trail hear."""
    row = f'#alerts tr[data-alert="{loop.event_id}"]'
    page.wait_for_selector(f"{row}.alert-firing", timeout=30_000)
    page.click(f'{row} button[data-act="ack"]')
    page.wait_for_selector(f"{row}.alert-acknowledged", timeout=20_000)
    _chromium.until(page, "!!document.querySelector('#audit li[data-audit=\"acknowledge\"]')")
    assert "demo-admin" in page.inner_text('#audit li[data-audit="acknowledge"]')
    (state,) = [a for a in loop.api("alerts?limit=200")["items"]
                if a["event_id"] == loop.event_id]
    assert state["status"] == "acknowledged"

    def heard() -> bool:
        with loop.receiver.got:
            return any(a["labels"]["event_id"] == loop.event_id
                       and a["annotations"]["acknowledged"] == "true"
                       for b in loop.receiver.bodies for a in b["alerts"])

    loop.poll("the acknowledgement at the webhook", heard, 30)


def label_false_alarm_in_the_dashboard(loop: OperatorLoop, page: Any) -> None:
    """Step 3: the alert opens its event; the label form records a false alarm."""
    page.click(f'#alerts tr[data-alert="{loop.event_id}"] td.link-cell')
    _chromium.until(page, "document.getElementById('detail-title').textContent"
                          f".includes('{ANOMALY_GATEWAY}')")
    form = "#detail-body form.label-form"
    page.select_option(f"{form} select[name=label]", "false_alarm")
    page.fill(f"{form} input[name=note]", "operator loop: the valve actuator, not a leak")
    page.click(f"{form} button[type=submit]")
    _chromium.until(page, "[...document.querySelectorAll('#detail-body ul.labels strong')]"
                          ".some((s) => s.textContent === 'false_alarm')")
    labels = loop.api(f"anomalies/{loop.event_id}/labels")["items"]
    assert [(lb["label"], lb["user"]) for lb in labels] == [("false_alarm", "demo-admin")]


def label_reaches_the_gateway(loop: OperatorLoop) -> None:
    """Step 3b: the label publisher (a demo service, ``labels`` login) delivers the label
    to well A's gateway, which stores it in its label book."""
    book = loop.run.layout.root / "state" / ANOMALY_GATEWAY / "labels.db"

    def stored() -> bool:
        if not book.exists():
            return False
        with sqlite3.connect(f"file:{book}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT label, doc FROM labels").fetchall()
        return any(lb == "false_alarm" and loop.event_id in doc for lb, doc in rows)

    loop.poll("the false-alarm label in well A's label book", stored, 30, 0.5)


def next_federated_round(loop: OperatorLoop) -> str:
    """Step 4: one federated round over the wells with their labels; its model is promoted
    through the canary and every gateway serves it. Returns the new version."""
    run = loop.run
    demo.start_federated_round(run, rounds=1, labels=True)
    fl = run.fl_child
    assert fl is not None
    loop.poll("the federated run to finish", lambda: fl.proc.poll() is not None, 240, 1.0)
    assert fl.proc.returncode == 0, fl.log_tail()
    from federation.registry.store import Registry

    registry = Registry(run.layout.registry)

    def promoted() -> str | None:
        prod = registry.production()
        return prod.version if prod and prod.version != run.initial_version else None

    version: str = loop.poll("promotion of the federated model", promoted, 180, 1.0)

    def all_serve() -> bool:
        rows = [g for g in loop.api("fleet")["items"] if g["site"] == "demo"]
        return len(rows) == 3 and all(g["model_version"] == version for g in rows)

    loop.poll("every gateway serving the new model", all_serve, 120, 1.0)
    return version


def valve_alerts(loop: OperatorLoop, since_ns: int, until_ns: int) -> set[int]:
    """The valve strokes (their onsets) that alerted at the webhook between the two times."""
    out = set()
    for a, at in firing(loop):
        if since_ns <= at < until_ns:
            e = loop.stored(a["labels"]["event_id"])
            if on_the_anomaly(loop, e):
                out.add(stroke_onset_ns(loop, e["start_ns"]))
    return out


def valve_levels(loop: OperatorLoop, onsets: list[int]) -> list[tuple[float, float]]:
    """Per stroke: the valve group's highest score and its threshold then (the gateway's
    summaries, `/window`): a stroke over its threshold that raised no event was muted by
    the false-alarm calibration, one under it by the model (or the threshold)."""
    out = []
    for t in onsets:
        got = {}
        for fld in ("score", "threshold"):
            w = loop.api(f"window?site=demo&gateway={ANOMALY_GATEWAY}&stream=das&start={t}"
                         f"&end={t + int(4e9)}&ch_start={VALVE[0]}&ch_end={VALVE[1]}"
                         f"&field={fld}&resolution=0.5")
            vals = [v for row in w["values"] for v in row if v is not None]
            got[fld] = max(vals) if vals else float("nan")
        out.append((got["score"], got["threshold"]))
    return out


def the_pattern_no_longer_alerts(loop: OperatorLoop, served_ns: int) -> None:
    """Step 5: `STROKES_AFTER` valve strokes after the round's model is served raise no
    event on the valve's channels. (Recall after a label round is pinned by
    tests/integration/test_fl_labels.py and `bench labels`: the demo's repeated leaks do not
    alert reliably under its 30 s warm-up thresholds, before the round as after it.)"""
    first = stroke_onset_ns(loop, served_ns)
    first += int(PERIOD_S * 1e9) if first < served_ns else 0
    strokes = [first + int(k * PERIOD_S * 1e9) for k in range(STROKES_AFTER)]
    done = strokes[-1] + int(10e9)  # the last stroke (2 s) and its event's way to the cloud
    time.sleep(max(0.0, (done - time.time_ns()) / 1e9))
    events = [e for e in loop.api(f"anomalies?gateway={ANOMALY_GATEWAY}&limit=1000")["items"]
              if on_the_anomaly(loop, e) and e["start_ns"] >= served_ns]
    after = valve_levels(loop, strokes)
    print(f"valve strokes after the round (score, threshold): {after}")
    assert events == [], events  # the labelled pattern raised nothing, so no alert either
    assert not valve_alerts(loop, served_ns, time.time_ns())
    # ... and not because the thresholds grew over it (the demo's short-warm-up thresholds
    # swing, up to 16,016 in one run): the pattern's own score fell under a quarter of the
    # level it alerted at, so the round's model learned it
    assert all(score < loop.valve_peak / 4 for score, _ in after), (after, loop.valve_peak)


def test_anomaly_alert_acknowledge_label_and_next_round(loop: OperatorLoop) -> None:
    alert_reaches_the_webhook(loop)
    with _chromium.browser() as chromium, _chromium.page(chromium, 1600, 1000) as page:
        problems = _chromium.console_problems(page)
        page.goto(loop.run.dashboard)
        acknowledge_in_the_dashboard(loop, page)
        label_false_alarm_in_the_dashboard(loop, page)
        assert not problems, problems
    label_reaches_the_gateway(loop)
    labelled_ns, began = time.time_ns(), time.monotonic()
    version = next_federated_round(loop)
    served_ns = time.time_ns()
    print(f"next round: {version} served everywhere after {time.monotonic() - began:.0f} s")
    before = sorted(valve_alerts(loop, 0, labelled_ns))
    levels = valve_levels(loop, before)
    print(f"valve strokes before the label (score, threshold): {levels}")
    loop.valve_peak = min(score for score, _ in levels)
    print(f"valve strokes alerting: before the label {len(before)},"
          f" between the label and the served round "
          f"{len(valve_alerts(loop, labelled_ns, served_ns))}")
    the_pattern_no_longer_alerts(loop, served_ns)
    (state,) = [a for a in loop.api("alerts?limit=200")["items"]
                if a["event_id"] == loop.event_id]
    assert state["status"] == "acknowledged"  # the operator's word outlives the model swap
