"""`fiberwatch cloud serve` as a process over a real influxd, queried by `fiberwatch query`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud import codec, schema
from cloud.influx import InfluxClient
from edge_agent.events import Event, event_id
from fiberwatch.services import LOOPBACK, Influxd, free_port
from tests.integration._polling import wait_for

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789abcdef"


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    def health() -> dict | None:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as r:  # noqa: S310
                return json.loads(r.read())
        except (urllib.error.URLError, OSError):
            return None

    def failed() -> str | None:
        if proc.poll() is None:
            return None
        return f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"

    return wait_for(health, timeout, "cloud serve to answer /health", 0.1, failed=failed)


@pytest.mark.slow
def test_serve_query_and_clean_shutdown(influxd: Influxd, tmp_path: Path) -> None:
    start = time.time_ns() - 30 * 10**9
    event = Event(
        id=event_id("site-a", "gw-1", "dts", start, 5), site="site-a", gateway="gw-1",
        stream="dts", start_ns=start, end_ns=start + 10**9, ch_start=5, ch_end=9,
        dist_start_m=5.0, dist_end_m=9.0, peak_score=4.0, mean_score=3.0, threshold=1.0,
        severity="critical", class_hint="fault", n_windows=1, model_version="m2",
        model_hash="aa" * 32, detected_ns=start + 2 * 10**9)
    with InfluxClient(influxd.url) as client:
        schema.ensure_schema(client)
        client.write(schema.DB, [codec.event_line(event, start)], rp=schema.RP_EVENTS)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'"{TOKEN}" = {{ name = "otto", role = "operator" }}\n')
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [sys.executable, "-m", "fiberwatch", "cloud", "serve", "--port", str(port),
           "--influx", influxd.url, "--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_healthy(url, proc)["influx"] == "ok"
        out = subprocess.run(
            [sys.executable, "-m", "fiberwatch", "query", "anomalies", "--api", url,
             "--severity", "critical"], env={"FIBERWATCH_TOKEN": TOKEN, "PATH": ""},
            capture_output=True, text=True, timeout=60, check=True).stdout
        assert event.id in out and "fault" in out
        bad = subprocess.run(
            [sys.executable, "-m", "fiberwatch", "query", "window", "--api", url,
             "--token", TOKEN, "--site", "site-a", "--start", "now-1h", "--end", "now",
             "--ch-start", "0", "--ch-end", "100000"], capture_output=True, text=True,
            timeout=60)
        assert bad.returncode == 2
        assert bad.stderr == ("fiberwatch query: error: HTTP 400: 100001 channels exceed "
                              "the limit of 16384\n")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn drains and runs the lifespan's shutdown, then re-raises SIGINT: status 130; a
    # SIGINT that lands before uvicorn's handlers are in (a loaded machine) exits 0 instead
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err, err
    assert "Traceback" not in err
    assert f"dashboard {url}/" in err


def test_serve_refuses_insecure_settings_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "fiberwatch", "cloud", "serve", "--port",
                        str(free_port())], capture_output=True, text=True, timeout=60,
                       env={"PATH": ""}, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("fiberwatch cloud: error: Value error, no API tokens configured")
    assert r.stderr.count("\n") == 1
