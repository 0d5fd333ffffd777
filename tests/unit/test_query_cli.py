"""`fiberwatch query anomalies|window` against the app, in process (httpx transport)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api.memory import MemoryStore
from cloud.main import create_app
from cloud.settings import CloudSettings, TokenInfo
from edge_agent.events import Event, event_id
from edge_agent.summary import FeatureSummary
from fiberwatch import cli
from fiberwatch.commands import query
from fiberwatch.services import free_port

TOKEN = "viewer-token-0123456789abcdef"
T0 = 1_780_000_000 * 10**9
S = 10**9


def _store() -> MemoryStore:
    store = MemoryStore()
    for i, (severity, ch) in enumerate((("low", 10), ("critical", 300))):
        start = T0 + i * 60 * S
        store.add_event(Event(
            id=event_id("site-a", "gw-1", "das", start, ch), site="site-a", gateway="gw-1",
            stream="das", start_ns=start, end_ns=start + 5 * S, ch_start=ch, ch_end=ch + 7,
            dist_start_m=ch * 1.02, dist_end_m=(ch + 7) * 1.02, peak_score=3.25,
            mean_score=2.0, threshold=1.0, severity=severity, class_hint="leak", n_windows=3,
            model_version="m7", model_hash="cd" * 32, detected_ns=start + 6 * S))
    for k in range(10):
        store.add_summary(FeatureSummary(
            site="site-a", gateway="gw-1", stream="das", t_ns=T0 + k * S, ch_start=0,
            group_size=4, score=[0.5, 1.5], energy=[-1.0, -2.0], threshold=[1.0, 1.0],
            model_version="m7"))
    return store


@pytest.fixture(autouse=True)
def app_client(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = CloudSettings(tokens={TOKEN: TokenInfo(name="vera", role="viewer")})
    app = create_app(settings, store=_store())
    monkeypatch.setattr(query, "_client", lambda args: TestClient(app, base_url=args.api))
    monkeypatch.delenv("FIBERWATCH_TOKEN", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["query", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_anomalies_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "anomalies", "--token", TOKEN)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["START", "SITE", "GATEWAY"]
    assert "critical" in lines[1] and "300-307" in lines[1] and "306.0-313.1" in lines[1]
    assert lines[1].startswith("2026-05-28T20:27:40.000Z")


def test_anomalies_filters_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "anomalies", "--token", TOKEN, "--severity", "low",
                       "--ch-max", "50", "--format", "json")
    items = json.loads(out)
    assert code == 0 and [e["severity"] for e in items] == ["low"]


def test_anomalies_csv_with_token_from_env(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIBERWATCH_TOKEN", TOKEN)
    code, out, _ = run(capsys, "anomalies", "--format", "csv", "--limit", "1")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and tuple(rows[0]) == query.TABLE_COLUMNS and len(rows) == 1
    assert rows[0]["peak_score"] == "3.25"


def test_no_matches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "anomalies", "--token", TOKEN, "--site", "elsewhere")
    assert code == 0 and out == "no anomalies match\n"


def test_window_csv_to_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "w.csv"
    code, out, _ = run(capsys, "window", "--token", TOKEN, "--site", "site-a", "--start",
                       str(T0), "--end", str(T0 + 10 * S), "--ch-start", "0", "--ch-end", "7",
                       "--output", str(target))
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert code == 0 and out == ""
    assert rows[0] == ["time", "time_ns", "ch_0", "ch_4"]
    assert rows[1][2:] == ["0.5", "1.5"] and len(rows) == 11


def test_window_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "window", "--token", TOKEN, "--site", "site-a", "--start",
                       "2026-05-28T20:26:40Z", "--end", "2026-05-28T20:26:50Z",
                       "--ch-start", "0", "--ch-end", "7", "--field", "energy",
                       "--format", "json")
    body = json.loads(out)
    assert code == 0 and body["field"] == "energy" and body["values"][1][0] == -2.0


@pytest.mark.parametrize(("argv", "message"), [
    (("window", "--site", "site-a", "--start", "now-30d", "--end", "now", "--ch-start", "0",
      "--ch-end", "7"), "HTTP 400: time span 30 d exceeds the limit of 7 d"),
    (("window", "--site", "site-a", "--start", "soon", "--end", "now", "--ch-start", "0",
      "--ch-end", "7"), "HTTP 400: start: 'soon' is not a time"),
    (("anomalies", "--limit", "5000"), "HTTP 422: limit: Input should be less than or equal"),
    (("anomalies", "--site", "a b"), "HTTP 422: site: Value error, name 'a b' must match"),
])
def test_http_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple,
                                  message: str) -> None:
    code, out, err = run(capsys, *argv, "--token", TOKEN)
    assert code == 2 and out == ""
    assert err.startswith(f"fiberwatch query: error: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("token", "message"), [
    (None, "no API token: pass --token or set FIBERWATCH_TOKEN"),
    ("wrong-token-0123456789abcdef", "HTTP 401: invalid token"),
])
def test_token_errors(capsys: pytest.CaptureFixture[str], token: str | None,
                      message: str) -> None:
    argv: list[Any] = ["anomalies"] + (["--token", token] if token else [])
    code, _, err = run(capsys, *argv)
    assert code == 2 and err == f"fiberwatch query: error: {message}\n"


def test_unreachable_api(capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real httpx client
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "anomalies", "--api", url, "--token", TOKEN, "--timeout", "2")
    assert code == 2 and err.startswith(f"fiberwatch query: error: cannot reach the API at {url}")
