# ruff: noqa: S608 - InfluxQL here is built from constants and checked names of this module
"""The real stack of `fiberwatch bench chaos`: Mosquitto, influxd (25 MB body limit, its
default), ingestion and the API as their own processes (so they can be killed), and
gateways publishing through the edge agent's own uplink and durable outbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from cloud.influx import InfluxClient, quote_literal
from edge_agent.config import GatewayConfig
from edge_agent.events import Event, event_id
from edge_agent.store_forward import Outbox
from edge_agent.summary import FeatureSummary
from edge_agent.uplink import Uplink
from fiberwatch.bench.cloud import _probe_ready
from fiberwatch.services import Influxd, Mosquitto, free_port

S = 1_000_000_000
INFLUXD_BODY_LIMIT = 25_000_000  # influxd 1.x's default max-body-size
BROKER_PACKET_LIMIT = 64 << 20  # above 30 MB: the oversized messages reach ingestion
TOKENS = {role: f"chaos-{role}-token-0123456789abcdef" for role in ("viewer", "operator",
                                                                    "admin")}


class Stack:
    """Start with `start()`, stop with `stop()`; every process is stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker = Mosquitto(root / "mosquitto",
                                extra_conf=f"max_packet_size {BROKER_PACKET_LIMIT}\n")
        self.influxd = Influxd(root / "influxd", max_body_size=INFLUXD_BODY_LIMIT)
        self.influx = InfluxClient(self.influxd.url, timeout=30)
        self.ingest: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self.tokens_file = root / "tokens.json"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        self.broker.start()
        self.influxd.start()
        self.start_ingest()
        _probe_ready(self.broker, self.influx)
        self.tokens_file.write_text(json.dumps(
            {t: {"name": f"chaos-{r}", "role": r} for r, t in TOKENS.items()}))
        alerting = self.root / "alerting.toml"  # a webhook to a closed loopback port
        alerting.write_text(f'[alerting]\nstate_db = "{self.root / "alerts.sqlite"}"\n'
                            '[[receivers]]\nname = "hook"\ntype = "webhook"\n'
                            'url = "http://127.0.0.1:9/hook"\n'
                            '[[rules]]\nname = "all"\nreceivers = ["hook"]\n')
        self.api = self._spawn("api", [sys.executable, "-m", "fiberwatch", "cloud", "serve",
                                       "--port", str(self.api_port), "--influx",
                                       self.influxd.url, "--tokens", str(self.tokens_file),
                                       "--registry", str(self.root / "registry"),
                                       "--alerting", str(alerting)])
        _wait(self._api_up, 60, "the API")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start_ingest(self) -> None:
        self.ingest = self._spawn("ingest", [
            sys.executable, "-m", "cloud.ingest", "--mqtt-port", str(self.broker.port),
            "--influx-url", self.influxd.url, "--client-id", "chaos-ingest",
            "--dead-letter-dir", str(self.root / "dead-letter"), "--log-level", "INFO"])

    def kill_ingest(self) -> None:
        """SIGKILL: no drain, no disconnect; what was in its memory is gone."""
        if self.ingest is not None and self.ingest.poll() is None:
            self.ingest.send_signal(signal.SIGKILL)
            self.ingest.wait(30)

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v1/health", timeout=2):  # noqa: S310
                return True
        except OSError as exc:
            return getattr(exc, "code", 0) == 503  # up, InfluxDB says degraded

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v1/health", timeout=5) as r:  # noqa: S310
                return dict(json.loads(r.read()))
        except OSError as exc:
            return {"error": str(exc)}

    def stop(self) -> None:
        for proc in (self.api, self.ingest):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.influx.close()
        self.influxd.stop()
        self.broker.stop()

    # --- what is stored ------------------------------------------------------------------

    def stored_events(self, site: str) -> list[str]:
        """The gateway event id of every stored event point of `site` (one per point)."""
        where = f'"site" = {quote_literal(site)}'
        rows = self.influx.rows('SELECT "gateway_event_id", "end_ns" FROM '
                                f'"fiberwatch"."events"."event" WHERE {where}')
        return [str(r["gateway_event_id"]) for r in rows]

    def stored_summaries(self, site: str) -> int:
        rows = self.influx.rows(f'SELECT count("n") FROM "fiberwatch"."raw"."features" '
                                f"WHERE \"site\" = {quote_literal(site)}")
        return int(rows[0]["count"]) if rows else 0


class Gateway:
    """One gateway's publishing path, as the agent runs it: `Uplink` over a durable `Outbox`
    (events QoS1 at least once, summaries QoS0, health retained)."""

    def __init__(self, root: Path, port: int, site: str, gw: str = "gw1") -> None:
        self.site, self.gw = site, gw
        cfg = GatewayConfig.model_validate({
            "gateway": {"site": site, "id": gw, "data_dir": str(root / site)},
            "broker": {"port": port, "keepalive_s": 5},
            "model": {"allow_unsigned": True},  # no model here: the uplink path only
            "streams": [{"kind": "dts", "channels": 8, "sample_rate_hz": 1, "window_s": 10,
                         "hop_s": 5}]})
        (root / site).mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(root / site / "outbox.sqlite", max_events=1_000_000,
                             max_age_s=7 * 86400)
        self.uplink = Uplink(cfg, self.outbox, reconnect_delay_s=(0.2, 2.0))
        self.events: list[str] = []  # gateway ids of the events handed to the outbox
        self.summaries = 0
        self._t0 = time.time_ns() // S * S - 3600 * S

    def __enter__(self) -> Gateway:
        self.uplink.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uplink.flush(30)
        self.uplink.stop()
        self.outbox.close()

    def publish(self, seconds: float, rate_hz: float = 20.0) -> None:
        """Events at `rate_hz` and a summary with every 4th for `seconds`."""
        tick, end = threading.Event(), time.monotonic() + seconds
        while time.monotonic() < end:
            k = len(self.events)
            t = self._t0 + k * S
            e = Event(id=event_id(self.site, self.gw, "das", t, 0), site=self.site,
                      gateway=self.gw, stream="das", start_ns=t, end_ns=t + S, ch_start=0,
                      ch_end=3, dist_start_m=0.0, dist_end_m=4.0, peak_score=2.0,
                      mean_score=1.5, threshold=1.0, severity="medium", class_hint="leak",
                      n_windows=1, model_version="chaos-1", model_hash="h" * 8,
                      detected_ns=t + S)
            self.uplink.send_event(e)
            self.events.append(e.id)
            if k % 4 == 0:  # summaries at a quarter of the event rate (5 Hz at 20 Hz)
                self.uplink.send_summary(FeatureSummary(
                    site=self.site, gateway=self.gw, stream="das", t_ns=t, ch_start=0,
                    group_size=4, score=[0.1] * 16, energy=[1.0] * 16, threshold=[1.0] * 16,
                    model_version="chaos-1"))
                self.summaries += 1
            tick.wait(1 / rate_hz)


def _wait(cond: Any, timeout: float, what: str) -> bool:
    deadline, tick = time.monotonic() + timeout, threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench chaos: timed out waiting for {what}")
        tick.wait(0.1)
    return True
