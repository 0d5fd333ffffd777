"""Simulator -> interrogator files -> `fiberwatch bridge` -> real Mosquitto -> agent -> event.

The simulator writes its run as a real interrogator would (DAS as PRODML or DASDAE HDF5,
read back through DASCore; DTS as CSV), a `fiberwatch bridge run` subprocess publishes the
files, the agent (`edge_agent.main.run`, in a thread) scores them, and the injected leak
comes out as an event at its channel. A subscriber records every raw frame on the broker.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent import topics
from fiberwatch.services import Mosquitto
from sensors_sim import SimConfig, Simulator, parse_scenario
from sensors_sim.files import RunFileWriter
from tests.integration._polling import wait_for
from tests.integration.test_edge_agent import agent
from tests.integration.test_uplink_tls import _write_pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GW = "it", "gw1"
CH = 64
SECONDS = 30.0
LEAK_CH, LEAK_ONSET = 40, 20.0
T0 = 1_704_067_200 * 10**9


def simulator(das_dtype: str) -> Simulator:
    """30 s with a leak at 20 s, intensity 3: at 2 the agent (0.25 s hop, short warm-up)
    flagged it for 1.5 s at 1.1x its threshold, under the default alarm on-delay (2 s:
    `EventConfig.on_delay_s`), so no event was raised; at 3 it is flagged for all 8 s."""
    cfg = SimConfig(site=SITE, gateway=GW, channels=CH, seconds=SECONDS, start_ns=T0,
                    das_dtype=das_dtype, dts_interval_s=1.0, scenarios=(
                        parse_scenario(f"leak:onset={LEAK_ONSET},duration=8,"
                                       f"channel={LEAK_CH},intensity=3"),))
    return Simulator(cfg, seed=3)


def bridge_toml(tmp_path: Path, port: int, watch: Path, das_format: str) -> Path:
    p = tmp_path / "bridge.toml"
    p.write_text(f"""
[bridge]
site = "{SITE}"
gateway = "{GW}"
watch_dir = "{watch}"
state_file = "{tmp_path / 'bridge-state' / 'state.sqlite'}"
poll_s = 0.05
settle_s = 0.2
commit_frames = 4
allow_insecure = true           # the test broker: loopback, no TLS

[broker]
host = "127.0.0.1"
port = {port}

[das]
format = "{das_format}"
channels = {CH}
sample_rate_hz = 2000.0
spacing_m = 1.0
gauge_length_m = 10.0
units = "1/s"
scale = 0.00390625

[dts]
channels = {CH}
sample_rate_hz = 1.0
""")
    return p


def agent_config(tmp_path: Path, port: int) -> dict:
    return {
        "gateway": {"site": SITE, "id": GW, "data_dir": str(tmp_path / "agent")},
        "broker": {"port": port},
        "model": {"allow_unsigned": True},
        "streams": [
            {"kind": "das", "channels": CH, "sample_rate_hz": 2000.0, "window_s": 0.5,
             "hop_s": 0.25, "group_size": 8},
            {"kind": "dts", "channels": CH, "sample_rate_hz": 1.0, "window_s": 10.0,
             "hop_s": 5.0, "group_size": 8}],
        "threshold": {"warmup_windows": 40, "history_windows": 400},
        "ingest": {"queue_frames": 4000},
        "uplink": {"health_interval_s": 0.5, "summary_interval_s": 0.5},
    }


class Recorder:
    """Every raw frame and event on the broker for the gateway."""

    def __init__(self, port: int, *, ca: Path | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.frames: list[bytes] = []
        self.events: list[dict] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        base = topics.base(SITE, GW)
        self._c.on_connect = lambda c, *_: c.subscribe([(f"{base}/raw/#", 0),
                                                        (f"{base}/events", 1)])
        self._c.on_subscribe = lambda *_: ready.set()
        self._c.on_message = self._on_message
        if ca is not None:
            self._c.tls_set(ca_certs=str(ca))
        if auth is not None:
            self._c.username_pw_set(*auth)
        self._c.connect("127.0.0.1", port)
        self._c.loop_start()
        assert ready.wait(10)

    def _on_message(self, _c, _u, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            if m.topic.endswith("/events"):
                self.events.append(json.loads(m.payload))
            else:
                self.frames.append(bytes(m.payload))

    def count(self) -> int:
        with self._lock:
            return len(self.frames)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def spawn_bridge(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fiberwatch", "-v", "bridge", "run",
                             "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop_bridge(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    if p.poll() is None:
        p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


def published(state: Path) -> dict[str, int]:
    if not state.exists():
        return {}
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def sim_frames(sim: Simulator) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"das": [], "dts": []}
    for stream, frame in sim.frames():
        out[stream].append(frame)
    return out


def check_leak(events: list[dict]) -> dict:
    final = {e["id"]: e for e in events}
    das = [e for e in final.values() if e["stream"] == "das"]
    assert len(das) == 1, das
    (e,) = das
    assert e["ch_start"] - 3 <= LEAK_CH <= e["ch_end"] + 3, e
    assert abs(e["start_ns"] - (T0 + LEAK_ONSET * 1e9)) <= 1e9, e
    return e


@pytest.mark.parametrize(("das_format", "das_dtype"), [("PRODML", "int16"),
                                                       ("DASDAE", "float32")])
def test_interrogator_files_reach_the_agent_and_the_leak_is_found(
        mosquitto: Mosquitto, tmp_path: Path, das_format: str, das_dtype: str) -> None:
    watch = tmp_path / "interrogator"
    sim = simulator(das_dtype)
    writer = RunFileWriter(sim, watch, das_format=das_format, file_s=2.0, dts_traces=5)
    for b in sim.blocks():
        writer.add(b)
    files = writer.close()
    cfg = bridge_toml(tmp_path, mosquitto.port, watch, das_format)
    rec = Recorder(mosquitto.port)
    want = sim_frames(sim)
    total = sum(len(v) for v in want.values())
    with agent(agent_config(tmp_path, mosquitto.port)) as (m, result):
        bridge = spawn_bridge(cfg)
        try:
            wait_for(lambda: published(tmp_path / "bridge-state" / "state.sqlite").get(
                "published") == len(files), 120, "the bridge to publish every file")
            wait_for(lambda: m.snapshot()["frames"] >= total, 60, "the agent to take them")
            wait_for(lambda: any(e["stream"] == "das" for e in rec.events), 60, "an event")
        finally:
            code, out, err = stop_bridge(bridge)
    assert code == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["files"] == len(files) and stats["file_errors"] == 0
    assert sorted(rec.frames) == sorted(want["das"] + want["dts"]), "the simulator's frames"
    assert result["drops"] == {} and result["gaps"] == 0
    e = check_leak(rec.events)
    assert e["class_hint"] == "leak"
    assert sorted(p.name for p in watch.iterdir()) == sorted(p.name for p in files), \
        "the interrogator's files are left alone"
    rec.close()


def test_a_sigkill_mid_directory_loses_and_duplicates_nothing(mosquitto: Mosquitto,
                                                              tmp_path: Path) -> None:
    """The interrogator keeps writing; the bridge is SIGKILLed while it works through the
    directory (inside a file when the poll catches one being published) and restarted."""
    watch = tmp_path / "interrogator"
    sim = simulator("int16")
    writer = RunFileWriter(sim, watch, das_format="PRODML", file_s=2.0, dts_traces=5)
    blocks = list(sim.blocks())
    half = len(blocks) // 2
    for b in blocks[:half]:
        writer.add(b)
    cfg = bridge_toml(tmp_path, mosquitto.port, watch, "PRODML")
    state = tmp_path / "bridge-state" / "state.sqlite"
    rec = Recorder(mosquitto.port)
    want = sim_frames(sim)
    with agent(agent_config(tmp_path, mosquitto.port)) as (m, result):
        first = spawn_bridge(cfg)
        try:
            wait_for(lambda: published(state).get("published", 0) >= 2
                     or published(state).get("publishing", 0) >= 1, 120, "publishing")
            first.kill()  # SIGKILL: no flush, no commit, no goodbye
            first.wait(10)
        finally:
            stop_bridge(first, signal.SIGKILL)
        before = published(state)
        for b in blocks[half:]:
            writer.add(b)
        files = writer.close()
        second = spawn_bridge(cfg)
        try:
            wait_for(lambda: published(state).get("published") == len(list(watch.iterdir())),
                     120, "the restarted bridge to publish the rest")
            n = sum(len(v) for v in want.values())
            wait_for(lambda: m.snapshot()["frames"] >= n, 60, "the agent to take them")
            wait_for(lambda: any(e["stream"] == "das" for e in rec.events), 60, "an event")
        finally:
            code, out, err = stop_bridge(second)
    assert code == 0, err
    assert before.get("published", 0) < len(files), "the kill came mid-directory"
    unique = set(rec.frames)
    assert unique == set(want["das"] + want["dts"]), "nothing lost, every frame as simulated"
    resent = len(rec.frames) - len(unique)
    assert resent <= 4, "at most the frames since the last commit (commit_frames)"
    # the agent saw each frame once: a re-sent one is dropped as a duplicate, no gap
    assert set(result["drops"]) <= {"duplicate"} and result["drops"].get("duplicate", 0) == resent
    assert result["gaps"] == 0 and result["frames"] == len(unique)
    assert published(state) == {"published": len(files)}
    check_leak(rec.events)
    rec.close()


def test_replay_over_tls_with_a_password_from_the_environment(tmp_path: Path) -> None:
    """`fiberwatch bridge replay DIR --speed`: a site's recordings, once, through a broker
    that wants TLS and credentials (the password from the variable the config names)."""
    ca, crt, key = _write_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    for user in ("bridge", "reader"):
        subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, f"pw-{user}"], check=True)
    conf = (f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
            f"password_file {pwfile}\nallow_anonymous false\n")
    sim = simulator("int16")
    watch = tmp_path / "recordings"
    writer = RunFileWriter(sim, watch, das_format="DASDAE", file_s=5.0, dts_traces=10)
    for b in sim.blocks():
        writer.add(b)
    writer.close()
    with Mosquitto(tmp_path / "mq", extra_conf=conf) as broker:
        cfg = bridge_toml(tmp_path, broker.port, watch, "auto")
        text = cfg.read_text().replace("allow_insecure = true", "allow_insecure = false")
        text = text.replace(f"port = {broker.port}\n", f"port = {broker.port}\ntls = true\n"
                            f'ca_file = "{ca}"\nusername = "bridge"\n'
                            'password_env = "FW_TEST_BRIDGE_PW"\n')
        cfg.write_text(text)
        rec = Recorder(broker.port, ca=ca, auth=("reader", "pw-reader"))
        argv = [sys.executable, "-m", "fiberwatch", "bridge", "replay", str(watch), "--config",
                str(cfg), "--speed", "20x"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "FW_TEST_BRIDGE_PW": "pw-bridge"})
        assert r.returncode == 0, r.stderr
        stats = json.loads(r.stdout.strip().splitlines()[-1])
        want = sim_frames(sim)
        assert stats["frames"] == len(want["das"]) + len(want["dts"]) and stats["errors"] == {}
        wait_for(lambda: rec.count() >= stats["frames"], 30, "the replayed frames")
        assert sorted(rec.frames) == sorted(want["das"] + want["dts"])
        rec.close()
        bad = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "FW_TEST_BRIDGE_PW": "wrong"})
        assert bad.returncode == 2 and "no connection to the broker" in bad.stderr
        assert "refused: Not authorized" in bad.stderr


def test_the_service_waits_for_a_broker_that_starts_after_it(tmp_path: Path) -> None:
    sim = simulator("float32")
    watch = tmp_path / "interrogator"
    writer = RunFileWriter(sim, watch, das_format="DASDAE", file_s=10.0, dts_traces=30)
    for b in sim.blocks():
        writer.add(b)
    files = writer.close()
    broker = Mosquitto(tmp_path / "mq")  # its port is chosen, the broker not started yet
    cfg = bridge_toml(tmp_path, broker.port, watch, "DASDAE")
    state = tmp_path / "bridge-state" / "state.sqlite"
    bridge = spawn_bridge(cfg)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(bridge.stderr.readline, "")))
    reader.start()
    want = sim_frames(sim)
    try:
        wait_for(lambda: any("event=broker_unreachable" in x for x in lines), 60,
                 "the bridge to report the broker unreachable")
        assert bridge.poll() is None, "the service must not exit without a broker"
        broker.start()
        rec = Recorder(broker.port)
        wait_for(lambda: published(state).get("published") == len(files), 120,
                 "the files to be published once the broker is up")
        wait_for(lambda: rec.count() >= len(want["das"]) + len(want["dts"]), 30, "frames")
        rec.close()
    finally:
        if bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(30)
        reader.join(10)
        broker.stop()
    assert code == 0, "".join(lines)
    assert set(rec.frames) == set(want["das"] + want["dts"]), "none lost while it waited"
