"""The whole agent against a real Mosquitto: frames in over MQTT, events out over MQTT.

The agent runs in a thread of the test process (`edge_agent.main.run`, the real uplink,
outbox, model slot and normal buffer), except where a test needs to kill it: then it is a
`fiberwatch edge run` subprocess, stopped by its PID.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent import topics, wire
from edge_agent.config import GatewayConfig
from edge_agent.main import run
from edge_agent.metrics import Metrics
from edge_agent.summary import PACKED_MAGIC, FeatureSummary
from fiberwatch.services import Mosquitto

pytestmark = pytest.mark.integration

SITE, GW = "it", "gw1"
CH = 64
RATE = 2000.0
FRAME = 100
FRAME_NS = 50_000_000
HOP_FRAMES = 5  # frames per hop (hop_s 0.25 in `config`)
T0 = 1_700_000_000 * 10**9


def config(tmp_path: Path, port: int, **over) -> dict:
    d = {
        "gateway": {"site": SITE, "id": GW, "data_dir": str(tmp_path / "data")},
        "broker": {"port": port},
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "das", "channels": CH, "sample_rate_hz": RATE, "window_s": 0.5,
                     "hop_s": 0.25, "group_size": 8}],
        "threshold": {"warmup_windows": 40, "history_windows": 400},
        "ingest": {"queue_frames": 4000},
        "uplink": {"health_interval_s": 0.5, "summary_interval_s": 0.5},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def synth(first: int, n: int, *, leak: tuple[int, int, int] | None = None,
          seed: int = 0) -> list[bytes]:
    """Frames ``first .. first+n-1`` of white noise; ``leak=(lo, hi, from_frame)`` adds 4x
    broadband energy on channels lo..hi from that frame on."""
    out = []
    for k in range(first, first + n):
        rng = np.random.default_rng([seed, k])
        x = rng.normal(size=(FRAME, CH)).astype(np.float32)
        if leak is not None and k >= leak[2]:
            x[:, leak[0]:leak[1] + 1] += 4 * rng.normal(size=(FRAME, leak[1] - leak[0] + 1))
        out.append(wire.encode(wire.StreamKind.DAS, k, T0 + k * FRAME_NS, RATE, 0, x))
    return out


class Listener:
    """A paho client that subscribes in on_connect (so it survives broker restarts) and
    collects JSON messages per topic suffix."""

    def __init__(self, port: int, *subs: str) -> None:
        self.msgs: dict[str, list[dict]] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._c.on_connect = lambda c, *_: c.subscribe([(topics.base(SITE, GW) + "/" + s, 1)
                                                        for s in subs])
        self._c.on_subscribe = lambda *_: self._subscribed.set()
        self._c.on_message = self._on_message
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c, _u, m: mqtt.MQTTMessage) -> None:
        suffix = topics.parse(m.topic)[2]
        with self._cond:
            if suffix.startswith("features/"):  # packed summaries (schema 2) by default
                assert m.payload[:4] == PACKED_MAGIC
                doc = dataclasses.asdict(FeatureSummary.decode(m.payload))
            else:
                doc = json.loads(m.payload)
            self.msgs.setdefault(suffix, []).append(doc)
            self._cond.notify_all()

    def wait(self, suffix: str, pred: Callable[[list[dict]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.msgs.get(suffix, [])), timeout)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


class Publisher:
    def __init__(self, port: int) -> None:
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()
        self.topic = topics.raw(SITE, GW, "das")

    def send(self, payloads: list[bytes], topic: str | None = None) -> None:
        infos = [self._c.publish(topic or self.topic, p, qos=0) for p in payloads]
        for i in infos:
            i.wait_for_publish(10)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@contextmanager
def agent(cfg: dict) -> Iterator[tuple[Metrics, dict]]:
    """Run the agent in a thread until the block ends; yields (metrics, final snapshot)."""
    stop, ready, metrics, result = threading.Event(), threading.Event(), Metrics(), {}
    t = threading.Thread(target=lambda: result.update(
        run(GatewayConfig.model_validate(cfg), stop, metrics=metrics, ready=ready)))
    t.start()
    try:
        assert ready.wait(20), "the agent did not subscribe"
        yield metrics, result
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive()


def handled(m: Metrics, n: int, timeout: float = 60) -> bool:
    """Wait until `n` frames were accepted or dropped (nothing queued any more)."""
    return m.wait_for(lambda c: c["frames"] + sum(c["drops"].values()) >= n, timeout)


def test_a_leak_gives_one_event_with_the_right_place_and_onset(mosquitto: Mosquitto,
                                                               tmp_path: Path) -> None:
    listen = Listener(mosquitto.port, "events", "features/das", "health")
    pub = Publisher(mosquitto.port)
    onset = 320  # frame 320 = 16 s, after the 40-window warm-up
    frames = synth(0, 420, leak=(30, 35, onset))
    with agent(config(tmp_path, mosquitto.port)) as (m, result):
        pub.send(frames)
        assert handled(m, len(frames))
        assert listen.wait("events", lambda e: len(e) >= 1, 30)
    assert result["drops"] == {} and result["gaps"] == 0
    (e,) = _by_id(listen.msgs["events"]).values()  # announced, then final: one id
    assert abs(e["ch_start"] - 30) <= 3 and abs(e["ch_end"] - 35) <= 3
    assert abs(e["start_ns"] - (T0 + onset * FRAME_NS)) <= 2 * 250_000_000
    assert e["model_version"] == "stat-robustz-1" and e["class_hint"] == "leak"
    assert listen.msgs["features/das"], "summaries are published"
    health = listen.msgs["health"][-1]
    assert health["status"] in ("stopping", "offline")
    listen.close()
    pub.close()


def test_bad_input_is_counted_and_scoring_goes_on(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pub = Publisher(mosquitto.port)
    good = synth(0, 200)
    nan = np.ones((FRAME, CH), np.float32)
    nan[3, 7] = np.nan
    bad = [
        b"not a frame",
        good[5][:-1] + b"\x00",  # checksum
        wire.encode(wire.StreamKind.DTS, 1, T0, RATE, 0, np.zeros((FRAME, CH), np.float32)),
        wire.encode(wire.StreamKind.DAS, 1, T0, RATE, 0, np.zeros((FRAME, CH + 1), np.float32)),
        wire.encode(wire.StreamKind.DAS, 1, T0, 1000.0, 0, np.zeros((FRAME, CH), np.float32)),
    ]
    stream = good[:100] + bad + [good[99], good[10]]  # + a duplicate, an old one (not recent)
    stream += [wire.encode(wire.StreamKind.DAS, 100, T0 + 100 * FRAME_NS, RATE, 0, nan)]
    stream += good[101:]
    with agent(config(tmp_path, mosquitto.port)) as (m, result):
        pub.send(stream)
        # the non-finite frame counts twice, as a frame (scored, its NaN zeroed) and as a
        # drop: waiting for len(stream) alone could stop the agent one frame early
        assert handled(m, len(stream) + 1)
    drops = result["drops"]
    assert drops == {"malformed:short": 1, "malformed:checksum": 1, "stream_kind": 1,
                     "channels": 1, "sample_rate": 1, "duplicate": 1, "out_of_order": 1,
                     "nonfinite": 1}
    assert result["gaps"] == 0 and result["frames"] == 200
    assert result["windows"] == (200 * FRAME - 1000) // 500 + 1  # every window, none lost
    pub.close()


def test_scoring_and_delivery_resume_after_a_broker_restart(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    frames = synth(0, 600, leak=(40, 44, 520))
    with agent(config(tmp_path, mosquitto.port)) as (m, result):
        pub = Publisher(mosquitto.port)
        pub.send(frames[:300])
        assert handled(m, 300)
        pub.close()
        mosquitto.stop()
        mosquitto.start()
        listen = Listener(mosquitto.port, "events")
        pub = Publisher(mosquitto.port)
        # the agent resubscribes on reconnect: send the next frame until it is taken
        k = 300
        while k < 320 and not m.wait_for(lambda c: c["frames"] > 300, 0.5):
            pub.send([frames[k]])
            k += 1
        assert m.snapshot()["frames"] > 300
        pub.send(frames[k:])
        assert listen.wait("events", lambda e: len(e) >= 1, 60)
    assert result["gaps"] == 0
    (e,) = _by_id(listen.msgs["events"]).values()
    assert abs(e["ch_start"] - 40) <= 3 and abs(e["ch_end"] - 44) <= 3
    listen.close()
    pub.close()


def _by_id(events: list[dict]) -> dict[str, dict]:
    """An event is announced while open and re-sent when it closes: last version per id."""
    return {e["id"]: e for e in events}


def _write_toml(path: Path, cfg: dict) -> Path:
    lines = []
    for table in ("gateway", "broker", "model", "threshold", "ingest", "uplink"):
        lines.append(f"[{table}]")
        for k, v in cfg[table].items():
            lines.append(f"{k} = {json.dumps(v)}")
    lines.append("[[streams]]")
    for k, v in cfg["streams"][0].items():
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _feed_until_windows(listen: Listener, pub: Publisher, timeout_s: float = 60.0) -> int:
    """Send noise frames 10 at a time until the agent's health reports windows (it has
    subscribed); the number of frames sent."""
    deadline, k = time.monotonic() + timeout_s, 0
    while not listen.wait("health", lambda h: h and h[-1].get("windows", 0) > 0, 0.5):
        assert time.monotonic() < deadline, "the agent reported no windows"
        pub.send(synth(k, 10))
        k += 10
    return k


def _spawn_agent(cfg_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fiberwatch", "edge", "run", "--config",
                             str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.mark.slow
def test_events_of_a_killed_agent_are_delivered_by_the_next_one(tmp_path: Path) -> None:
    """The broker refuses the agent's events (ACL) so they stay in the outbox; SIGKILL; a new
    agent process on the same data dir delivers them once the broker accepts them."""
    acl = tmp_path / "acl"
    deny_events = (f"topic readwrite {topics.base(SITE, GW)}/raw/#\n"
                   f"topic readwrite {topics.base(SITE, GW)}/health\n"
                   f"topic readwrite {topics.base(SITE, GW)}/model_state\n"
                   f"topic readwrite {topics.base(SITE, GW)}/features/#\n"
                   f"topic read {topics.base(SITE, GW)}/#\n")
    acl.write_text(deny_events)
    broker = Mosquitto(tmp_path / "mq", extra_conf=f"acl_file {acl}\n")
    broker.start()
    procs: list[subprocess.Popen[str]] = []
    try:
        cfg_path = _write_toml(tmp_path / "gw.toml", config(tmp_path, broker.port))
        listen = Listener(broker.port, "events", "health")
        procs.append(_spawn_agent(cfg_path))
        pub = Publisher(broker.port)
        # the subprocess subscribes at some point after start (later on a busy machine):
        # feed noise until it reports windows, then the warm-up (40 windows + 10 held back
        # by the quarantine) with a margin, then 5 s of leak
        k = _feed_until_windows(listen, pub)
        leak_from = k + 60 * HOP_FRAMES
        pub.send(synth(k, leak_from + 100 - k, leak=(30, 35, leak_from)))
        assert listen.wait("health", lambda h: h and h[-1]["outbox_depth"] >= 1, 60), \
            f"the refused event should wait in the outbox: {listen.msgs.get('health', [])[-1:]}"
        procs[0].kill()
        procs[0].wait(10)
        assert not listen.msgs.get("events")
        listen.close()
        pub.close()
        broker.stop()
        acl.write_text(f"topic readwrite {topics.base(SITE, GW)}/#\n")
        broker.start()
        listen = Listener(broker.port, "events")
        procs.append(_spawn_agent(cfg_path))
        assert listen.wait("events", lambda e: len(e) >= 1, 60)
        e = listen.msgs["events"][0]
        # (a flagged window may start up to a window before the leak)
        assert abs(e["ch_start"] - 30) <= 3 and e["start_ns"] >= T0 + (leak_from - 20) * FRAME_NS
        assert _stop(procs[1]) == 0
        listen.close()
    finally:
        for p in procs:
            _stop(p, signal.SIGKILL)
        broker.stop()


def test_sigterm_stops_the_agent_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg_path = _write_toml(tmp_path / "gw.toml", config(tmp_path, mosquitto.port))
    listen = Listener(mosquitto.port, "health", "model_state")
    p = _spawn_agent(cfg_path)
    try:
        assert listen.wait("model_state", lambda s: len(s) >= 1, 30)
        state = listen.msgs["model_state"][-1]
        assert state["model_version"] == "stat-robustz-1" and state["status"] == "ok"
        assert _stop(p, signal.SIGTERM) == 0
        assert listen.wait("health", lambda h: h and h[-1]["status"] == "offline", 10)
    finally:
        _stop(p, signal.SIGKILL)
        listen.close()


def test_once_seconds_prints_the_counters(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg_path = _write_toml(tmp_path / "gw.toml", config(tmp_path, mosquitto.port))
    r = subprocess.run([sys.executable, "-m", "fiberwatch", "edge", "run", "--config",
                        str(cfg_path), "--once-seconds", "1"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["frames"] == 0 and "latency_ms" in out
    # the test config allows unsigned models: the agent says so loudly at start
    assert "level=WARNING" in r.stderr and "UNSIGNED model packages" in r.stderr


def test_bad_config_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nsite = "s"\nid = "g"\ndata_dir = "d"\n[[streams]]\nkind = "das"\n'
                   'channels = 0\nsample_rate_hz = 2000\nwindow_s = 1\nhop_s = 0.5\n')
    r = subprocess.run([sys.executable, "-m", "fiberwatch", "edge", "run", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "streams.0.channels" in lines[0]


@pytest.fixture(scope="module")
def int8_package() -> bytes:
    """A real int8 package for the test stream's feature spec (~30-60 s: torch + litert)."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    import torch

    from edge_agent.features import FeatureExtractor
    from federation.model.autoencoder import AutoEncoder
    from federation.registry.package import package_model

    spec = GatewayConfig.model_validate(config(Path("/unused"), 1883)).streams[0].feature_spec()
    fx = FeatureExtractor(spec)
    rows = []
    for k in range(0, 200, 10):
        x = np.concatenate([wire.decode(f).data for f in synth(k, 10, seed=99)])
        rows.append(fx.transform(x))
    normal = np.concatenate(rows)
    model = AutoEncoder(spec.dim)
    model.mean.copy_(torch.from_numpy(normal.mean(axis=0)))
    model.std.copy_(torch.from_numpy(normal.std(axis=0) + 1e-3))
    pkg, _ = package_model(model, spec, rows=normal, version="it-int8-1")
    return pkg


@pytest.mark.slow
def test_a_retained_model_is_swapped_in_and_names_the_events(
        mosquitto: Mosquitto, tmp_path: Path, int8_package: bytes) -> None:
    import hashlib

    listen = Listener(mosquitto.port, "events", "model_state")
    pub = Publisher(mosquitto.port)
    frames = synth(0, 900, leak=(30, 35, 800))
    # this test is about the swap: a loaded CI machine must not fail the latency check
    cfg = config(tmp_path, mosquitto.port, model={"latency_budget_ms": 2000.0})
    with agent(cfg) as (m, _result):
        pub.send(frames[:100])  # recent rows for the slot's smoke test
        assert handled(m, 100)
        info = pub._c.publish(topics.model(SITE, GW), int8_package, qos=1, retain=True)
        info.wait_for_publish(10)
        # verified and staged off the scoring path; swapped in between the next two windows
        assert listen.wait("model_state",
                           lambda s: any(x["staged_version"] == "it-int8-1" for x in s), 60)
        pub.send(frames[100:])  # the new model's thresholds warm up, then the leak
        assert handled(m, len(frames))
        assert listen.wait("model_state",
                           lambda s: any(x["model_version"] == "it-int8-1" for x in s), 10)
        state = [x for x in listen.msgs["model_state"] if x["model_version"] == "it-int8-1"][-1]
        assert state["previous_version"] == "stat-robustz-1" and state["last_result"] == "swapped"
        assert listen.wait("events", lambda e: len(e) >= 1, 30)
    events = listen.msgs["events"]
    assert {e["model_version"] for e in events} == {"it-int8-1"}
    assert events[0]["model_hash"] == hashlib.sha256(int8_package).hexdigest()
    assert any(abs(e["ch_start"] - 30) <= 3 for e in events)
    listen.close()
    pub.close()


def test_a_second_agent_on_the_same_data_dir_refuses_in_one_line(mosquitto: Mosquitto,
                                                                  tmp_path: Path) -> None:
    cfg = config(tmp_path, mosquitto.port)
    cfg_path = _write_toml(tmp_path / "gw.toml", cfg)
    with agent(cfg):
        r = subprocess.run([sys.executable, "-m", "fiberwatch", "edge", "run", "--config",
                            str(cfg_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "outbox" in lines[0], r.stderr


MV_COLS, MV_LAGS = 3, 4


def _process(n: int, seed: int, fault_at: int | None = None) -> np.ndarray:
    """Three coupled 1 Hz process tags (flow; pressure follows it; temperature lags it); from
    ``fault_at`` the pressure reads 1.5 units high: in range, but the relation breaks."""
    rng = np.random.default_rng(seed)
    flow = np.zeros(n)
    for i in range(1, n):
        flow[i] = 0.9 * flow[i - 1] + rng.normal(0, 0.5)
    flow += 10.0
    lagged = np.convolve(np.pad(flow, 1, "edge"), np.ones(3) / 3, "valid")  # no padded edge
    x = np.stack([flow, 2.0 * flow + rng.normal(0, 0.2, n),
                  40.0 + lagged + rng.normal(0, 0.2, n)], 1)
    if fault_at is not None:
        x[fault_at:, 1] += 1.5
    return x.astype(np.float32)


def _mv_frames(x: np.ndarray, first_row: int) -> list[bytes]:
    return [wire.encode(wire.StreamKind.DTS, first_row + i, T0 + (first_row + i) * 10**9, 1.0,
                        0, x[i:i + 1]) for i in range(len(x))]


@pytest.fixture(scope="module")
def mv_package() -> bytes:
    """An int8 mv package (3 columns, 4 lags) trained and calibrated like `model train --csv`
    would, on 400 normal rows (~20 s: torch + litert)."""
    pytest.importorskip("litert_torch")
    from edge_agent.features import FeatureSpec, mv_row
    from federation.model.train import train
    from federation.registry.package import package_model

    spec = FeatureSpec(profile="mv", sample_rate_hz=1.0, window_s=float(MV_LAGS), hop_s=1.0,
                       bands_hz=(), context_radius=0, channels=MV_COLS)
    x = _process(400, seed=0)
    rows = np.concatenate([mv_row(x[i:i + MV_LAGS], MV_COLS) for i in range(len(x) - 3)])
    model, _, held = train(rows, validation=0.2, gap=MV_LAGS - 1, robust=True, min_rows=60)
    pkg, _ = package_model(model, spec, rows=rows[:len(rows) - len(held)], held_back=held,
                           version="it-mv-1")
    return pkg


@pytest.mark.slow
def test_an_mv_process_stream_runs_a_swapped_in_mv_model(
        mosquitto: Mosquitto, tmp_path: Path, mv_package: bytes) -> None:
    """A process stream (profile mv) on the real agent: the retained mv package is verified,
    swapped in, scores one row per input row at its calibrated threshold from the first
    window, and its event covers the broken relation."""
    listen = Listener(mosquitto.port, "events", "model_state")
    pub = Publisher(mosquitto.port)
    stream = {"kind": "dts", "profile": "mv", "channels": MV_COLS, "sample_rate_hz": 1.0,
              "window_s": float(MV_LAGS), "hop_s": 1.0, "bands_hz": [], "context_radius": 0}
    cfg = config(tmp_path, mosquitto.port, model={"latency_budget_ms": 2000.0})
    cfg["streams"] = [stream]
    x = _process(400, seed=1, fault_at=300)
    frames = _mv_frames(x, 0)
    topic = topics.raw(SITE, GW, "dts")
    with agent(cfg) as (m, _result):
        pub.send(frames[:60], topic)  # recent rows for the slot's smoke test
        assert handled(m, 60)
        pub._c.publish(topics.model(SITE, GW), mv_package, qos=1, retain=True).wait_for_publish(10)
        assert listen.wait("model_state",
                           lambda s: any(x["staged_version"] == "it-mv-1" for x in s), 60), \
            listen.msgs.get("model_state")
        pub.send(frames[60:], topic)  # swapped in before the next window
        assert handled(m, len(frames))
        assert listen.wait("model_state",
                           lambda s: any(x["model_version"] == "it-mv-1" for x in s), 10)
        assert listen.wait("events", lambda e: len(e) >= 1, 30)
    events = [e for e in _by_id(listen.msgs["events"]).values()]
    assert {e["model_version"] for e in events} == {"it-mv-1"}
    assert any(e["start_ns"] >= T0 + 295 * 10**9 and e["ch_start"] == 0
               and e["ch_end"] == MV_COLS - 1 for e in events)  # the whole stream, the fault
    early = [e for e in events if e["end_ns"] < T0 + 290 * 10**9]
    assert len(early) <= 3  # at the 1 % default a false alarm or so before the fault
    listen.close()
    pub.close()
