# ruff: noqa: S608 - InfluxQL here is built from this module's constants and checked names
"""Parts of `fiberwatch.bench._chaos_edge`: the real stack, a gateway agent process, the
real DAS stream it scores, an MQTT watcher of what it publishes, and the cloud's count.

Everything is real: Mosquitto and influxd from `fiberwatch.services`, ingestion
(`cloud.ingest.run_ingest`, the code behind ``fiberwatch cloud ingest``) in a thread, and the
agent as a ``fiberwatch edge run --config FILE`` process stopped by its PID.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import topics, wire
from edge_agent.clock import ENV_OFFSET_FILE
from edge_agent.summary import FeatureSummary
from fiberwatch.services import Influxd, Mosquitto

SITE = "chaos"
CH = 64
RATE = 2000.0
FRAME = 100  # samples per real frame: 50 ms
FRAME_NS = 50_000_000
HOP_S = 0.25
LEAK_EVERY_S = 6.0
LEAK_FOR_S = 2.0


@dataclass(frozen=True)
class Stack:
    """Where the broker and (optionally) the cloud are. ``influx_url`` None = no cloud."""

    mqtt_port: int
    influx_url: str | None = None


@contextmanager
def own_stack(work: Path, *, cloud: bool = True) -> Iterator[Stack]:
    """Mosquitto, and with `cloud` influxd plus ingestion, in `work`; stopped on exit."""
    from cloud.ingest import IngestSettings, run_ingest

    with Mosquitto(work / "mosquitto") as broker:
        if not cloud:
            yield Stack(broker.port)
            return
        with Influxd(work / "influxd") as server:
            settings = IngestSettings(mqtt_port=broker.port, influx_url=server.url,
                                      client_id="chaos-edge-ingest", backoff_initial_s=0.05,
                                      backoff_max_s=0.5)
            stop, ready = threading.Event(), threading.Event()
            t = threading.Thread(target=run_ingest, args=(settings, stop),
                                 kwargs={"ready": ready}, name="chaos-ingest", daemon=True)
            t.start()
            if not ready.wait(30):
                raise RuntimeError("chaos: ingestion did not subscribe")
            try:
                yield Stack(broker.port, server.url)
            finally:
                stop.set()
                t.join(30)


def agent_config(data_dir: Path, port: int, gateway: str, **over: dict) -> dict[str, Any]:
    """The agent's config: one 64-channel DAS stream, quick health and warm-up. It trusts
    a key of its own (no package is offered: the statistical detector scores)."""
    d: dict[str, Any] = {
        "model": {"public_key": str(_trust_key(data_dir.parent))},
        "gateway": {"site": SITE, "id": gateway, "data_dir": str(data_dir)},
        "broker": {"port": port},
        "streams": [{"kind": "das", "channels": CH, "sample_rate_hz": RATE, "window_s": 0.5,
                     "hop_s": HOP_S, "group_size": 8}],
        "threshold": {"warmup_windows": 20, "warmup_s": 0, "history_windows": 400},
        "ingest": {"queue_frames": 50_000, "queue_bytes": 256 * 1024 * 1024},
        "uplink": {"health_interval_s": 0.5, "summary_interval_s": 0.5},
        "federation": {"normal_buffer_windows": 10},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def _trust_key(folder: Path) -> Path:
    """A model-signing public key in ``folder`` (made once): signed packages only."""
    from federation.registry.keys import save_pair

    pub = folder / "chaos-model-signing.pub"
    if not pub.exists():
        folder.mkdir(parents=True, exist_ok=True)
        save_pair(folder / "chaos-model-signing.key", pub)
    return pub


def write_toml(path: Path, cfg: dict[str, Any]) -> Path:
    """A gateway TOML from `agent_config`'s dict (tables of scalars, one stream)."""
    lines = []
    for table, values in cfg.items():
        if table == "streams":
            continue
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines.append("[[streams]]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in cfg["streams"][0].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Agent:
    """One ``fiberwatch edge run`` process; `kill` and `start` again reuse its data dir."""

    def __init__(self, cfg_path: Path, log_dir: Path, env: dict[str, str] | None = None):
        self.cfg_path, self.log_dir, self.env = cfg_path, log_dir, env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.crashes = 0  # exits we did not cause

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"agent-{self.starts}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fiberwatch", "edge", "run", "--config", str(self.cfg_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (the fault), by PID."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait (the agent flushes open events and its outbox); None if it had
        died on its own before."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.crashes += self.proc.returncode not in (0, -signal.SIGKILL)
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log_tail(self, n: int = 2000) -> str:
        p = self.log_dir / f"agent-{self.starts}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""


@dataclass
class Seen:
    events: dict[str, dict] = field(default_factory=dict)  # id -> last version
    event_msgs: int = 0
    health: dict = field(default_factory=dict)
    summaries: int = 0
    summary_t_ns: int = 0


class Watch:
    """Subscribes (QoS1) to one gateway's events, health and feature summaries."""

    def __init__(self, port: int, gateway: str) -> None:
        self.seen = Seen()
        self._lock = threading.Lock()
        base = topics.base(SITE, gateway)
        subs = [(f"{base}/events", 1), (f"{base}/health", 1), (f"{base}/features/#", 0)]
        ok = threading.Event()
        self._c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-watch-{gateway}")
        self._c.on_connect = lambda c, *_: c.subscribe(subs)
        self._c.on_subscribe = lambda *_: ok.set()
        self._c.on_message = self._on_message
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()
        if not ok.wait(20):
            raise RuntimeError("chaos: the watcher did not subscribe")

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        kind = topics.parse(m.topic)[2]
        try:  # summaries are packed (schema 2) by default, the rest JSON
            doc = (dataclasses.asdict(FeatureSummary.decode(bytes(m.payload)))
                   if kind.startswith("features") else json.loads(m.payload))
        except ValueError:  # SummaryError and JSON errors
            return
        with self._lock:
            s = self.seen
            if kind == "events":
                s.events[doc["id"]] = doc
                s.event_msgs += 1
            elif kind == "health" and doc.get("status") != "offline":
                s.health = doc
            elif kind.startswith("features"):
                s.summaries += 1
                s.summary_t_ns = max(s.summary_t_ns, int(doc.get("t_ns", 0)))

    def health(self) -> dict:
        with self._lock:
            return dict(self.seen.health)

    def snapshot(self) -> Seen:
        with self._lock:
            return Seen(dict(self.seen.events), self.seen.event_msgs, dict(self.seen.health),
                        self.seen.summaries, self.seen.summary_t_ns)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@dataclass(frozen=True)
class Leak:
    start_ns: int
    end_ns: int
    ch_lo: int
    ch_hi: int


class Feed:
    """The real stream: one 64-channel DAS frame every 50 ms, stamped with the wall clock,
    with a leak (4x broadband energy on 6 channels) for `LEAK_FOR_S` every `LEAK_EVERY_S`
    once `leaks_from_s` have passed. `inject` publishes extra payloads on the same topic."""

    def __init__(self, port: int, gateway: str, *, leaks_from_s: float = 8.0,
                 seed: int = 0) -> None:
        self.topic = topics.raw(SITE, gateway, "das")
        self.sent = 0
        self.leaks: list[Leak] = []
        self._leaks_from_s, self._rng = leaks_from_s, np.random.default_rng(seed)
        self._stop = threading.Event()
        self._c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-feed-{gateway}")
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()
        self._t0 = time.time_ns() // FRAME_NS * FRAME_NS
        self._thread = threading.Thread(target=self._run, name="chaos-feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def frame(self, k: int) -> bytes:
        x = self._rng.normal(size=(FRAME, CH)).astype(np.float32)
        t = k * FRAME_NS / 1e9
        if t >= self._leaks_from_s and (t - self._leaks_from_s) % LEAK_EVERY_S < LEAK_FOR_S:
            n = int((t - self._leaks_from_s) // LEAK_EVERY_S)
            lo = 8 + (n * 13) % 44
            x[:, lo:lo + 6] *= 4.0
            self._note_leak(self._t0 + k * FRAME_NS, lo, lo + 5)
        return wire.encode(wire.StreamKind.DAS, k, self._t0 + k * FRAME_NS, RATE, 0, x)

    def _note_leak(self, t_ns: int, lo: int, hi: int) -> None:
        last = self.leaks[-1] if self.leaks else None
        if last and last.ch_lo == lo and t_ns - last.end_ns <= FRAME_NS:
            self.leaks[-1] = Leak(last.start_ns, t_ns + FRAME_NS, lo, hi)
        else:
            self.leaks.append(Leak(t_ns, t_ns + FRAME_NS, lo, hi))

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self._c.publish(self.topic, self.frame(self.sent), qos=0)
            self.sent += 1
            self._stop.wait(max(0.0, start + self.sent * FRAME_NS / 1e9 - time.monotonic()))

    def inject(self, payloads: list[bytes]) -> None:
        for p in payloads:
            self._c.publish(self.topic, p, qos=0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._c.disconnect()
        self._c.loop_stop()


def wait_for(cond: Any, timeout: float, tick: float = 0.1) -> bool:
    deadline, ev = time.monotonic() + timeout, threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            return False
        ev.wait(tick)
    return True


def stored_counts(influx_url: str, gateway: str) -> dict[str, int]:
    """Points per event id of this gateway in InfluxDB (the events retention policy), by
    the id the gateway gave the event: ingestion stores it under its own id
    (`cloud.codec.cloud_event_id`) and keeps the gateway's as ``gateway_event_id``."""
    from cloud.influx import InfluxClient

    topics.check_name(gateway, "gateway")
    with InfluxClient(influx_url) as influx:
        rows = influx.rows(
            'SELECT "gateway_event_id", "end_ns" FROM "fiberwatch"."events"."event" '
            f"WHERE \"site\" = '{SITE}' AND \"gateway\" = '{gateway}'")
    counts: dict[str, int] = {}
    for r in rows:
        gid = r.get("gateway_event_id") or r.get("id")
        if gid:
            counts[gid] = counts.get(gid, 0) + 1
    return counts


def offset_env(path: Path) -> dict[str, str]:
    """Environment of the agent's wall-clock test hook (`edge_agent.clock`)."""
    path.write_text("0\n")
    return {ENV_OFFSET_FILE: str(path)}
