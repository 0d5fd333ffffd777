"""The simulator publishes into a real Mosquitto; a subscriber receives decodable frames."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import topics, wire
from fiberwatch.cli import main
from fiberwatch.services import Mosquitto
from sensors_sim import SimConfig, Simulator, demo_fleet, parse_scenario, read_frames
from sensors_sim.publisher import FramePublisher, Source, publish_streams
from sensors_sim.runs import record

pytestmark = pytest.mark.integration
TIMEOUT = 30.0


class Collector:
    """A paho subscriber on ``fiberwatch/v1/#`` that keeps (topic, payload) in order."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._want = 0
        self.enough = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_connect = lambda c, *_: c.subscribe(f"{topics.ROOT}/#", qos=0)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self._subscribed.wait(TIMEOUT), "subscriber never got its SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))
            if self._want and len(self.messages) >= self._want:
                self.enough.set()

    def expect(self, n: int) -> None:
        with self._lock:
            self._want = n
            if len(self.messages) >= n:
                self.enough.set()

    def wait_for(self, n: int) -> list[tuple[str, bytes]]:
        self.expect(n)
        assert self.enough.wait(TIMEOUT), f"got {len(self.messages)} of {n} messages"
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Collector]:
    c = Collector(mosquitto.port)
    yield c
    c.close()


def _by_topic(messages: list[tuple[str, bytes]]) -> dict[str, list[wire.Frame]]:
    out: dict[str, list[wire.Frame]] = defaultdict(list)
    for topic, payload in messages:
        out[topic].append(wire.decode(payload))
    return out


def test_api_publishes_every_frame_on_its_topic_in_order(mosquitto, collector) -> None:
    cfg = SimConfig(site="well-a", gateway="gw1", channels=64, seconds=2.0,
                    scenarios=(parse_scenario("dropped:onset=1,duration=0.3"),))
    sim = Simulator(cfg, 3)
    expected = list(sim.frames())
    stats = publish_streams([Source("well-a", "gw1", sim.frames())], "127.0.0.1",
                            mosquitto.port, realtime=False)
    assert (stats.frames, stats.lost) == (len(expected), 0)
    got = collector.wait_for(len(expected))
    assert got == [(topics.raw("well-a", "gw1", s), f) for s, f in expected]
    frames = _by_topic(got)
    das = [f.seq for f in frames[topics.raw("well-a", "gw1", "das")]]
    assert das == [k for k in range(40) if k not in sim.labels()[0].dropped_seqs["das"]]
    assert [f.seq for f in frames[topics.raw("well-a", "gw1", "dts")]] == [0, 1]


@pytest.mark.slow
def test_cli_fleet_run_in_real_time(mosquitto, collector) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fiberwatch", "sim", "run", "--fleet", "--channels", "64",
         "--seconds", "2", "--broker", f"127.0.0.1:{mosquitto.port}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    n = sum(sum(Simulator(c, 0).n_frames().values()) for c in demo_fleet(2, channels=64))
    assert f"frames={n} " in proc.stdout and "lost=0" in proc.stdout
    frames = _by_topic(collector.wait_for(n))
    assert set(frames) == {topics.raw(s, g, k) for s, g in
                           [("well-a", "gw1"), ("well-b", "gw2"), ("pipeline-1", "gw3")]
                           for k in ("das", "dts")}
    for topic, fs in frames.items():
        assert [f.seq for f in fs] == list(range(len(fs))), topic
        assert all(a.end_ns <= b.t0_ns for a, b in zip(fs, fs[1:], strict=False))


@pytest.mark.slow
def test_sigterm_stops_an_endless_run_cleanly(mosquitto, collector, tmp_path: Path) -> None:
    rec = tmp_path / "live.fwrec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiberwatch", "sim", "run", "--channels", "32", "--seconds", "0",
         "--broker", f"127.0.0.1:{mosquitto.port}", "--record", str(rec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        collector.wait_for(10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped=yes" in out and "lost=0" in out
    sent = int(out.split("frames=")[1].split()[0])
    received = collector.wait_for(sent)
    assert len(received) == sent >= 10
    assert [f for _, f in received] == list(read_frames(rec))  # well-formed after the stop


def test_replay_sends_the_recorded_bytes(mosquitto, collector, tmp_path: Path) -> None:
    sim = Simulator(SimConfig(site="pipe-7", gateway="gw5", channels=48, seconds=1.5,
                              geometry="pipeline"), 8)
    record([sim], [tmp_path / "p.fwrec"])
    recorded = list(read_frames(tmp_path / "p.fwrec"))
    assert main(["sim", "replay", str(tmp_path / "p.fwrec"), "--fast",
                 "--broker", f"127.0.0.1:{mosquitto.port}", "--gateway", "gw6"]) == 0
    got = collector.wait_for(len(recorded))
    assert [p for _, p in got] == recorded
    assert {t for t, _ in got} == {topics.raw("pipe-7", "gw6", s) for s in ("das", "dts")}


def test_publisher_counts_frames_lost_when_the_broker_dies(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "m")
    broker.start()
    _, frame = next(iter(Simulator(SimConfig(channels=16), 0).frames()))
    pub = FramePublisher("127.0.0.1", broker.port, "well-a", "gw1")
    try:
        pub.connect()
        assert pub.publish("das", frame)
        pub.flush()
        assert pub.stats.frames == 1
        broker.kill()
        assert pub.disconnected.wait(TIMEOUT)
        assert not pub.publish("das", frame)
        assert pub.stats.lost == 1
    finally:
        pub.close(timeout=1)
        broker.stop()
