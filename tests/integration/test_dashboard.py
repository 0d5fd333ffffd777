"""The dashboard in real Chromium: the real app (uvicorn) over the real Store and influxd.

Data: `cloud.api.sample` (30 minutes of one DAS fiber on two gateways) plus one injected
event with its feature data, written as ingestion writes them (`cloud.codec`). The model
registry is the in-memory one (the real one needs signed packages).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from cloud import codec, schema
from cloud.api import sample
from cloud.influx import InfluxClient
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from edge_agent.events import Event, event_id
from edge_agent.summary import FeatureSummary
from fiberwatch.services import LOOPBACK, Influxd, free_port
from tests.integration import _chromium
from tests.integration._chromium import DATA_PIXELS as _DATA_PIXELS
from tests.integration._chromium import until as _until
from tests.integration._polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "admin-token-0123456789abcdef"
SERVED: dict[str, str] = {}


def _injected_event(now_ns: int) -> Event:
    start = now_ns - 200 * 10**9
    return Event(
        id=event_id(sample.SITE, "gw-01", "das", start, 560), site=sample.SITE, gateway="gw-01",
        stream="das", start_ns=start, end_ns=start + 50 * 10**9, ch_start=560, ch_end=583,
        dist_start_m=571.2, dist_end_m=594.7, peak_score=2.7, mean_score=1.9, threshold=1.0,
        severity="high", class_hint="fault", n_windows=25, model_version=sample.MODEL,
        model_hash=sample.MODEL_HASH, detected_ns=start + 51 * 10**9,
    )


def _with_event(s: FeatureSummary, e: Event) -> FeatureSummary:
    """The summary with the event's channel groups scored above threshold while it lasts."""
    if s.gateway != e.gateway or not e.start_ns <= s.t_ns <= e.end_ns:
        return s
    score = list(s.score)
    for g in range(e.ch_start // s.group_size, e.ch_end // s.group_size + 1):
        score[g] = 1.8 + 0.9 * ((g + s.t_ns // 10**9) % 3) / 2
    return dataclasses.replace(s, score=score)


def _write(client: InfluxClient, now_ns: int, event: Event) -> None:
    schema.ensure_schema(client)
    features = [codec.features_line(
        schema.FEATURES, site=s.site, gateway=s.gateway, stream=s.stream, t_ns=s.t_ns,
        ch_start=s.ch_start, group_size=s.group_size, score=np.asarray(s.score),
        energy=np.asarray(s.energy), threshold=np.asarray(s.threshold),
        model_version=s.model_version, flagged=len(s.flagged))
        for s in (_with_event(x, event) for x in sample.sample_summaries(now_ns))]
    client.write(schema.DB, features, rp=schema.RP_RAW, timeout=60)
    events = sample.sample_events(now_ns) + [(event, event.detected_ns + 180_000_000)]
    client.write(schema.DB, [codec.event_line(e, r) for e, r in events], rp=schema.RP_EVENTS)
    for health in sample.sample_health(now_ns):
        line, fleet = codec.health_lines(health, health["t_ns"])
        client.write(schema.DB, [line], rp=schema.RP_HISTORY)
        client.write(schema.DB, [fleet], rp=schema.RP_EVENTS)
    client.write(schema.DB, _model_health_lines(now_ns), rp=schema.RP_HISTORY)
    client.write(schema.DB, [
        f"fl_round,run_id={r['run_id']},strategy={r['strategy']} round={r['round']}i,"
        f"participants={r['participants']}i,failures={r['failures']}i,loss={r['loss']},"
        f"auc={r['auc']},bytes_up={r['bytes_up']}i,bytes_down={r['bytes_down']}i,"
        f"duration_s={r['duration_s']},model_version=\"{r['model_version']}\" {r['time_ns']}"
        for r in sample.sample_rounds(now_ns)], rp=schema.RP_HISTORY)


def _model_health_lines(now_ns: int) -> list[str]:
    """Ten minutes of heartbeats from gw-01: a stable model whose scores then shift."""
    from cloud import model_health

    out = []
    for k in range(60):
        psi = 0.03 if k < 40 else 0.03 + 0.04 * (k - 40)
        out += model_health.lines({"site": sample.SITE, "gateway": "gw-01",
                                   "t_ns": now_ns - (600 - 10 * k) * 10**9, "model_health": {
                                       "das": [{"model_version": sample.MODEL, "windows": 20,
                                                "rows": 20480, "score_psi": psi,
                                                "saturation_rate": 0.001,
                                                "out_of_range_rate": 0.002,
                                                "fallback_rate": 0.0}]}})
    return out


def _alerting(folder: Path, event: Event) -> Path:
    """An alerting config whose state holds one firing alert, for the injected event."""
    from cloud.alerting.engine import Alerter
    from cloud.alerting.service import load_config
    from cloud.alerting.state import AlertState

    path = folder / "alerts.toml"
    path.write_text(f'[alerting]\nstate_db = "{folder / "alerts.sqlite"}"\n'
                    '[[receivers]]\nname = "hook"\ntype = "webhook"\n'
                    'url = "http://127.0.0.1:9/hook"\n'
                    '[[rules]]\nname = "faults"\nkinds = ["fault"]\nreceivers = ["hook"]\n')
    config = load_config(path)
    state = AlertState(config.alerting.state_db)
    assert Alerter(config, state).observe({**event.to_dict(), "received_ns": 1}) == "fired"
    state.close()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Event]]:
    now_ns = time.time_ns() // 10**9 * 10**9
    event = _injected_event(now_ns)
    with Influxd(tmp_path_factory.mktemp("influxd")) as influxd:
        with InfluxClient(influxd.url) as client:
            _write(client, now_ns, event)
        settings = CloudSettings(influx_url=influxd.url, alerting_config=_alerting(
            tmp_path_factory.mktemp("alerting"), event),
                                 tokens={ADMIN: TokenInfo(name="ops", role="admin")})
        app = create_app(settings, registry=sample.sample_registry())
        app.state.live_max_stream_s = 4.0  # streams end often: the page must reconnect
        SERVED["influx_url"] = influxd.url
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port,
                                               log_level="warning", ws="none"))
        thread = threading.Thread(target=server.run, name="uvicorn-test")
        thread.start()
        wait_for(lambda: server.started, 20, "uvicorn to start", 0.02,
                 failed=lambda: None if thread.is_alive() else "its thread ended")
        try:
            yield f"http://{LOOPBACK}:{port}", event
        finally:
            server.should_exit = True
            thread.join(15)
            assert not thread.is_alive()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with _chromium.browser() as chromium:
        yield chromium


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    with _chromium.page(browser, 1600, 1080) as p:
        yield p


def test_dashboard_shows_event_and_waterfall(  # type: ignore[no-untyped-def]
    served: tuple[str, Event], page, tmp_path: Path
) -> None:
    base, event = served
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors = _chromium.console_problems(page)
    page.goto(f"{base}/#token={ADMIN}")
    row = page.locator(f'#events tr[data-id="{event.id}"]')  # re-rendered every poll
    row.wait_for(timeout=20_000)
    assert "fault" in row.inner_text()
    _until(page, f"({_DATA_PIXELS})('waterfall') > 0.5")
    assert "#token" not in page.url  # the token leaves the address bar
    page.wait_for_selector("#fleet tbody tr")
    # labelled false alarms muting flags, per gateway (`cloud.api.sample.sample_health`)
    _until(page, "[...document.querySelectorAll('#fleet td.fa-mutes')]"
                 ".map((td) => td.textContent).join() === '0,2'")
    assert "37 window(s), 52 group flag(s) muted" in page.get_attribute(
        "#fleet tbody tr:nth-child(2) td.fa-mutes", "title")
    page.wait_for_selector("#models tbody tr")
    page.wait_for_selector("#rounds tbody tr")

    row.click()
    page.wait_for_selector(".detail-wf")
    _until(page, "document.getElementById('detail-title').textContent.includes('fault')")
    _until(page, f"(() => {{ document.querySelector('.detail-wf').id = 'detail-wf';"
                 f" return ({_DATA_PIXELS})('detail-wf') > 0.5; }})()")
    page.mouse.move(700, 300)  # a probe reading on the info line

    _chromium.screenshot(page, tmp_path / "dashboard.png", "dashboard.png")
    assert not errors, errors
    foreign = [u for u in requests if not u.startswith(base)]
    assert foreign == []  # nothing from a CDN


def test_dashboard_acknowledges_and_resolves_an_alert(  # type: ignore[no-untyped-def]
    served: tuple[str, Event], page
) -> None:
    base, event = served
    problems = _chromium.console_problems(page)
    page.goto(f"{base}/#token={ADMIN}")
    row = f'#alerts tr[data-alert="{event.id}"]'
    page.wait_for_selector(f"{row}.alert-firing", timeout=20_000)
    page.click(f'{row} button[data-act="ack"]')
    page.wait_for_selector(f"{row}.alert-acknowledged", timeout=20_000)
    _until(page, "!!document.querySelector('#audit li[data-audit=\"acknowledge\"]')")
    assert "ops" in page.inner_text('#audit li[data-audit="acknowledge"]')
    page.click(f'{row} button[data-act="resolve"]')
    page.wait_for_selector(f"{row}.alert-resolved", timeout=20_000)
    assert page.locator(f"{row} button").count() == 0  # nothing left to do on it
    page.click(f"{row} td.link-cell")  # the alert opens its event
    _until(page, "document.getElementById('detail-title').textContent.includes('fault')")
    assert not problems, problems


def test_dashboard_is_pushed_updates_and_reconnects(  # type: ignore[no-untyped-def]
    served: tuple[str, Event], page
) -> None:
    base, event = served
    problems = _chromium.console_problems(page)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/api/v1/live") else None)
    page.goto(f"{base}/#token={ADMIN}")
    _until(page, "document.getElementById('live-state').textContent === 'live'")
    late = dataclasses.replace(event, id=event_id(sample.SITE, "gw-02", "das", event.start_ns, 9),
                               gateway="gw-02", class_hint="sand", ch_start=9, ch_end=20)
    with InfluxClient(SERVED["influx_url"]) as client:  # as ingestion writes a new event
        client.write(schema.DB, [codec.event_line(late, time.time_ns())], rp=schema.RP_EVENTS)
    page.locator(f'#events tr[data-id="{late.id}"]').wait_for(timeout=20_000)  # pushed: not polled
    deadline = time.monotonic() + 30  # the server ends each stream after 4 s
    while len(streams) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(streams) >= 2, streams  # the page reconnected
    _until(page, "document.getElementById('live-state').textContent === 'live'")
    assert not problems, problems


def test_drift_panel_draws_model_health_on_a_time_axis(  # type: ignore[no-untyped-def]
    served: tuple[str, Event], page, tmp_path: Path
) -> None:
    base, _ = served
    problems = _chromium.console_problems(page)
    page.goto(f"{base}/#token={ADMIN}")
    _until(page, "(document.getElementById('drift-chart')._mh || {}).points === 60")
    _until(page, "document.getElementById('drift-summary').textContent.includes("
                 "'point(s) past PSI 0.25')")
    summary = page.inner_text("#drift-summary")
    assert summary.startswith("1 model(s) · 14 point(s)"), summary  # the last 14 heartbeats
    assert "PSI 0.79" in page.inner_text("#drift-legend")  # the latest figures
    _until(page, "document.getElementById('drift-legend').textContent.includes("
                 "'labelled precision')")
    _chromium.screenshot(page, tmp_path / "drift.png", "drift.png")
    assert not problems, problems


def test_dashboard_labels_an_event_a_false_alarm(  # type: ignore[no-untyped-def]
    served: tuple[str, Event], page
) -> None:
    """The label form of the event detail: the label is stored (the API lists it with the
    operator's name) and the drift panel's labelled precision counts it."""
    base, event = served
    problems = _chromium.console_problems(page)
    page.goto(f"{base}/#token={ADMIN}")
    page.select_option("#gateway", event.gateway)
    page.locator(f'#events tr[data-id="{event.id}"]').click(timeout=20_000)
    _until(page, "document.getElementById('detail-title').textContent.includes('fault')")
    form = "#detail-body form.label-form"
    page.select_option(f"{form} select[name=label]", "false_alarm")
    page.fill(f"{form} input[name=note]", "a loose connector, fixed")
    page.click(f"{form} button[type=submit]")
    _until(page, "[...document.querySelectorAll('#detail-body ul.labels li')].some((li) =>"
                 " li.textContent === 'false_alarm by ops — a loose connector, fixed')")
    with InfluxClient(SERVED["influx_url"]) as client:
        from cloud.store import Store

        labels = Store(client).labels(event.id)
    assert [(lb["label"], lb["user"], lb["note"]) for lb in labels] == [
        ("false_alarm", "ops", "a loose connector, fixed")]
    # the panel re-reads precision on the next live update (streams end every 4 s here)
    _until(page, "document.getElementById('drift-legend').textContent.includes("
                 "'fault 0 % of 1')", timeout=30)
    assert not problems, problems


def test_docs_render_offline(served: tuple[str, Event], page) -> None:  # type: ignore[no-untyped-def]
    base, _ = served
    requests: list[str] = []
    problems = _chromium.console_problems(page)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v1/alerts/{event_id}/ack" in p for p in paths), paths[:5]
    assert [u for u in requests if not u.startswith(base)] == []  # nothing from a CDN
    assert not problems, problems


def test_dashboard_asks_for_a_token(served: tuple[str, Event], page) -> None:  # type: ignore[no-untyped-def]
    base, _ = served
    # provoked here: the wrong token's 401 and the too-wide window's 400 (Chromium logs each
    # as a failed resource); any other console error fails the test
    problems = _chromium.console_problems(page, allow=("status of 401", "status of 400"))
    page.goto(base + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token-input", "wrong-token-wrong-token")
    page.click("#login-form button")
    _until(page, "document.getElementById('login-error').textContent.includes('not accepted')")
    page.fill("#token-input", ADMIN)
    page.click("#login-form button")
    page.wait_for_selector("#login", state="hidden")
    _until(page, "document.getElementById('user').textContent.includes('ops (admin)')")
    page.fill("#ch-end", "99999")
    page.dispatch_event("#ch-end", "change")
    _until(page, "document.getElementById('wf-info').textContent.includes("
                 "'100000 channels exceed the limit')")
    assert not problems, problems


def test_sample_data_without_alerting_has_no_console_error(page) -> None:  # type: ignore[no-untyped-def]
    settings = CloudSettings(tokens={ADMIN: TokenInfo(name="ops", role="admin")})
    app = create_app(settings, store=sample.sample_store(), registry=sample.sample_registry())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning",
                                           ws="none"))
    thread = threading.Thread(target=server.run, name="uvicorn-sample")
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        problems = _chromium.console_problems(page)
        page.goto(f"http://{LOOPBACK}:{port}/#token={ADMIN}")
        _until(page, "document.getElementById('alerts-summary').textContent.includes("
                     "'not configured')")
        _until(page, "document.getElementById('drift-summary').textContent.includes("
                     "'no model-health data')")
        _until(page, "document.getElementById('live-state').textContent === 'live'")
        page.wait_for_selector("#events tbody tr[data-id]")
        assert not problems, problems
    finally:
        page.goto("about:blank")  # ends the live stream: uvicorn waits for open responses
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()
