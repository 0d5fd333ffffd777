"""The whole system, started for real by the demo launcher, end to end.

Mosquitto, influxd, the cloud (ingestion + API), the Flower SuperLink with the rollout
controller, three gateway agents with SuperNodes for the wells, and the simulator:
- a leak injected at channel X at time T appears in the API within 5 s, with the right
  channel range and the model version that scored it;
- a federated round completes (and is recorded in the API), its model goes out as a
  canary and is promoted, and every agent hot-swaps to it without dropping a window;
- the dashboard, in real headless Chromium, shows the leak and the round;
- shutdown leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fiberwatch import demo
from tests.integration import _chromium
from tests.integration._polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNELS = 128
LEAK_CHANNEL = 40
LEAK_ONSET_S = 45.0  # after the demo's threshold warm-up (`demo_setup.check_onsets_after_warmup`)


def _get(run: demo.DemoRun, path: str, **params: Any) -> Any:
    url = f"{run.api_url}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {run.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def _poll(what: str, fn: Callable[[], Any], timeout: float, run: demo.DemoRun,
          interval: float = 0.25) -> Any:
    """`wait_for` ``fn`` (an OSError counts as not yet); fails early when a child dies, and
    with every child's log tail on a timeout."""
    def check() -> Any:
        try:
            return fn()
        except OSError:
            return None

    def failed() -> str | None:
        dead = [c for c in run.supervisor.dead() if c.proc.returncode not in (0, None)]
        return f"{dead[0].name} died:\n{dead[0].log_tail()}" if dead else None

    try:
        return wait_for(check, timeout, what, interval, failed=failed)
    except AssertionError as exc:
        logs = "\n".join(f"--- {c.name}\n{c.log_tail(800)}" for c in run.supervisor.children)
        raise AssertionError(f"{exc}\n{logs}") from None


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


# (channels) => the main waterfall is drawn for well-a, 5 minutes, channels 0..channels-1
_SHOWS_VIEW = """(channels) => {
  const w = document.getElementById('waterfall')._wf?.win;
  const title = document.getElementById('wf-title').textContent;
  if (!w || !title.includes('well-a')) return false;
  const span = (Number(w.times_ns.at(-1)) - Number(w.times_ns[0])) / 1e9;
  return span < 301 && w.channels.at(-1) < channels;
}"""


def _dashboard_shows(run: demo.DemoRun, event: dict, fl_round: dict, shot: Path) -> None:
    """The demo's dashboard lists the leak (gateway, channels) and the federated round."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    until, pixels = _chromium.until, _chromium.DATA_PIXELS
    with _chromium.browser() as chromium, _chromium.page(chromium, 1600, 1000) as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(run.dashboard)
        row = page.locator(f'#events tr[data-id="{event["id"]}"]')  # re-rendered every 2 s
        try:
            row.wait_for(timeout=20_000)
        except PlaywrightTimeout as exc:
            shown = page.locator("#events").inner_text()
            raise AssertionError(f"the leak {event['id']} is not in the events panel:\n"
                                 f"{shown[:1500]}") from exc
        text = row.inner_text()  # the event may have grown since the API first showed it
        where = re.search(r"\bwell-a das (\d+)–(\d+)", text)
        assert where and int(where[1]) <= LEAK_CHANNEL <= int(where[2]), text
        until(page, "document.querySelectorAll('#rounds tbody tr').length > 0")
        cells = page.locator("#rounds tbody tr").first.locator("td").all_inner_texts()
        want = [str(fl_round[k]) for k in ("round", "participants", "failures")]
        assert cells[:3] == want, cells
        summary = page.locator("#rounds-summary").inner_text()
        assert str(fl_round["run_id"]) in summary, summary

        # for the picture: the last 5 min of well A's fiber, the leak's detail below
        page.select_option("#gateway", "well-a")
        page.select_option("#span", "5m")
        page.fill("#ch-end", str(CHANNELS - 1))
        page.dispatch_event("#ch-end", "change")
        row.click()
        until(page, "document.getElementById('detail-title').textContent.includes('well-a')")
        until(page, f"(() => {{ const c = document.querySelector('.detail-wf');"
                    f" if (!c) return false; c.id = 'detail-wf';"
                    f" return ({pixels})('detail-wf') > 0.3; }})()")
        until(page, f"({_SHOWS_VIEW})({CHANNELS}) && ({pixels})('waterfall') > 0.2")
        _chromium.screenshot(page, shot, "demo-dashboard.png")
        assert not errors, errors


def test_leak_to_api_federated_rollout_and_clean_shutdown(tmp_path: Path) -> None:
    opts = demo.DemoOptions(
        data_dir=tmp_path / "demo", seconds=None, channels=CHANNELS, api_port=0,
        fl_after_s=float("inf"), fl_rounds=1, leak_channel=LEAK_CHANNEL,
        leak_onset_s=LEAK_ONSET_S, train_seconds=10.0, canary_window_s=15.0,
    )
    run = demo.start(opts)
    pids = [run.broker.pid, run.influx.pid]
    try:
        pids += [c.pid for c in run.supervisor.children]
        onset_ns = run.t0_ns + int(LEAK_ONSET_S * 1e9)

        # 1. the leak reaches the API within 5 s of its onset
        def leak_events() -> list[dict]:
            return [e for e in _get(run, "anomalies", site="demo", gateway="well-a",
                                    stream="das", limit=100)["items"]
                    if e["ch_start"] - 5 <= LEAK_CHANNEL <= e["ch_end"] + 5
                    and e["start_ns"] >= onset_ns - 2e9]

        found = _poll("the leak in the API", leak_events, LEAK_ONSET_S + 60, run)
        seen_ns = time.time_ns()
        event = found[0]
        latency = {"api_s": (seen_ns - onset_ns) / 1e9,
                   "gateway_s": (event["detected_ns"] - onset_ns) / 1e9,
                   "ingest_s": (event["received_ns"] - event["detected_ns"]) / 1e9}
        print(f"leak onset -> API: {latency}")
        assert latency["api_s"] <= 5.0, f"the API showed the leak later than 5 s: {latency}"
        assert event["ch_start"] >= LEAK_CHANNEL - 8 and event["ch_end"] <= LEAK_CHANNEL + 8
        assert event["model_version"] == run.initial_version
        assert event["model_hash"] not in ("", "none")
        # on feature spec version 3 (spectra per hop + the slow low-band features; the
        # initial model is trained on it) and packed summaries
        from edge_agent.config import load_gateway_config

        gw = load_gateway_config(run.layout.config("well-a"))
        assert gw.stream("das").feature_spec().version == 3
        assert gw.uplink.summary_format == "packed"

        # 2. a federated round -> candidate -> canary -> production -> every agent swaps
        demo.start_federated_round(run, rounds=1)
        fl = run.fl_child
        assert fl is not None
        _poll("the federated run to finish", lambda: fl.proc.poll() is not None, 240, run)
        assert fl.proc.returncode == 0, fl.log_tail()
        rounds = _get(run, "rounds")["items"]  # the dashboard's rounds panel reads these
        assert [(r["round"], r["participants"], r["failures"]) for r in rounds] == [(1, 2, 0)], \
            rounds

        from federation.registry.store import Registry

        registry = Registry(run.layout.registry)

        def promoted() -> str | None:
            prod = registry.production()
            return prod.version if prod and prod.version != run.initial_version else None

        version = _poll("promotion of the federated model", promoted, 180, run, interval=1)
        history = [(h["version"], h["to"]) for h in registry.history()]
        assert (version, "canary") in history and (version, "production") in history

        def all_swapped() -> list[dict] | None:
            fleet = _get(run, "fleet")["items"]
            rows = [g for g in fleet if g["site"] == "demo"]
            ok = len(rows) == 3 and all(g["model_version"] == version for g in rows)
            return rows if ok else None

        fleet = _poll("every gateway serving the promoted model", all_swapped, 120, run,
                      interval=1)
        for g in fleet:  # the swap happened between windows: nothing dropped, no gap
            assert g["gaps"] == 0, g
            assert g.get("drops", {}).get("queue_full", 0) == 0, g

        # 3. the dashboard (real headless Chromium) shows the leak and the round
        began = time.monotonic()
        _dashboard_shows(run, event, rounds[0], tmp_path / "demo-dashboard.png")
        print(f"dashboard checked in {time.monotonic() - began:.1f} s")
    finally:
        demo.stop(run)
    alive = [p for p in pids if p is not None and _group_alive(p)]
    assert not alive, f"processes left behind: {alive}"
