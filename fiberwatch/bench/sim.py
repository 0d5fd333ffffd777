"""`fiberwatch bench sim`: simulator generation speed and publishing through real Mosquitto.

(a) DAS samples generated per second on one core (the generating thread's CPU time, and wall
    time), unencoded and encoded as int16 wire frames, with a leak and sand running.
(b) Simulated frames published as fast as possible through a real Mosquitto with a
    subscriber (a separate process) counting what arrives: sent, received, their ratio. The
    peer is a bare paho loop publishing an equal-size payload without simulation; the
    ratio sim/bare near 1 means publishing is limited by paho and the broker, not the
    simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent import topics

TARGET_GEN = 20e6
_SUBSCRIBER = r"""
import json, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, expected, idle = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
n = nbytes = 0
first = last = None
done, ready = threading.Event(), threading.Event()
def on_connect(c, u, f, r, p):
    c.subscribe("fiberwatch/v1/#", qos=0)
def on_subscribe(c, u, mid, rc, p):
    ready.set()
def on_message(c, u, m):
    global n, nbytes, first, last
    now = time.monotonic()
    first = first if first is not None else now
    last, n, nbytes = now, n + 1, nbytes + len(m.payload)
    if n >= expected:
        done.set()
c = mqtt.Client(CallbackAPIVersion.VERSION2)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
ready.wait(20)
print("ready", flush=True)
sys.stdin.readline()  # the publisher has finished
while not done.wait(idle):
    if last is not None and time.monotonic() - last > idle:
        break
c.loop_stop()
span = (last - first) if n > 1 else 0.0
print(json.dumps({"received": n, "bytes": nbytes, "span_s": span}), flush=True)
"""


def _generation(seconds: float) -> dict[str, Any]:
    from sensors_sim import SimConfig, Simulator, parse_scenario

    cfg = SimConfig(channels=1024, seconds=seconds, streams=("das",), scenarios=(
        parse_scenario(f"leak:onset=0,duration={seconds},channel=300"),
        parse_scenario(f"sand:onset=0,duration={seconds},channels=700-720")))
    out: dict[str, Any] = {"channels": cfg.channels, "rate_hz": cfg.das_rate,
                           "frame_samples": cfg.frame_samples, "seconds_simulated": seconds}
    for name, frames in (("blocks", False), ("frames_int16", True)):
        sim = Simulator(cfg, seed=1)
        n = 0
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        if frames:
            for _stream, frame in sim.frames():
                n += cfg.frame_samples * cfg.channels if frame else 0
        else:
            for b in sim.blocks(copy=False):
                n += b.data.size
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        out[name] = {"samples": n, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                     "samples_per_s_cpu": round(n / cpu), "samples_per_s_wall": round(n / wall)}
    return out


def _subscriber(port: int, expected: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, str(port), str(expected), "2.0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("benchmark subscriber did not start")
    return proc


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate("done\n", timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def _publish_sim(port: int, cfg: Any, samples_per_frame: int) -> dict[str, Any]:
    from sensors_sim import Simulator
    from sensors_sim.publisher import FramePublisher

    counts = Simulator(cfg, 1).n_frames()
    if counts is None:
        raise ValueError("the publish benchmark needs a run of finite length")
    n_frames = counts["das"]
    sub = _subscriber(port, n_frames)
    frames = Simulator(cfg, 1).frames()
    with FramePublisher("127.0.0.1", port, cfg.site, cfg.gateway) as pub:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for stream, frame in frames:
            pub.publish(stream, frame)
        pub.flush(60)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    got = _finish(sub)
    return _rates(pub.stats.frames, got, wall, cpu, samples_per_frame)


def _publish_bare(port: int, payload: bytes, n_frames: int, samples_per_frame: int
                  ) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sub = _subscriber(port, n_frames)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = topics.raw("bench", "bare", "das")
    t0, cpu0 = time.perf_counter(), time.process_time()
    infos = [client.publish(topic, payload, qos=0) for _ in range(n_frames)]
    for info in infos:
        info.wait_for_publish(60)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sent = sum(1 for i in infos if i.rc == 0 and i.is_published())
    client.disconnect()
    client.loop_stop()
    return _rates(sent, _finish(sub), wall, cpu, samples_per_frame)


def _rates(sent: int, got: dict[str, Any], wall: float, cpu: float, spf: int
           ) -> dict[str, Any]:
    return {
        "frames_sent": sent, "frames_received": got["received"],
        "received_over_sent": round(got["received"] / sent, 4) if sent else 0.0,
        "wall_s": round(wall, 3), "publisher_cpu_s": round(cpu, 3),
        "sent_samples_per_s": round(sent * spf / wall),
        "sent_samples_per_publisher_cpu_s": round(sent * spf / max(cpu, 1e-9)),
        "received_samples_per_s": round(got["received"] * spf / got["span_s"])
        if got["span_s"] > 0 else 0,
        "sent_mb_per_s": round(got["bytes"] / max(got["span_s"], 1e-9) / 1e6, 1),
    }


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    """Run both parts; figures, the bare-paho peer and their ratios."""
    del out_dir  # nothing beyond the result: `fiberwatch bench` writes the JSON
    from fiberwatch.services import Mosquitto
    from sensors_sim import SimConfig, Simulator

    load_before = os.getloadavg()[0]
    gen = _generation(3.0 if quick else 20.0)
    pub_seconds = 4.0 if quick else 30.0
    cfg = SimConfig(site="bench", gateway="sim", channels=1024, seconds=pub_seconds,
                    streams=("das",))
    spf = cfg.frame_samples * cfg.channels
    payload = next(iter(Simulator(replace(cfg, seconds=1.0), 2).frames()))[1]
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp, Mosquitto(Path(tmp)) as broker:
        sim_pub = _publish_sim(broker.port, cfg, spf)
        bare = _publish_bare(broker.port, payload, sim_pub["frames_sent"], spf)
    gen_rate = gen["frames_int16"]["samples_per_s_cpu"]
    return {
        "benchmark": "sim", "quick": quick,
        "load_avg_1m_at_start": round(load_before, 2),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "generation": gen,
        "generation_target_samples_per_s": TARGET_GEN,
        "generation_meets_target": gen_rate >= TARGET_GEN,
        "publish": {"frame_bytes": len(payload), "samples_per_frame": spf,
                    "sim": sim_pub, "bare_paho_peer": bare,
                    "sim_over_bare": round(sim_pub["sent_samples_per_s"]
                                           / max(bare["sent_samples_per_s"], 1), 3),
                    "generation_over_bare_publish": round(
                        gen_rate / max(bare["sent_samples_per_s"], 1), 3),
                    "generation_over_bare_received": round(
                        gen_rate / max(bare["received_samples_per_s"], 1), 3)},
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    g, p = result["generation"], result["publish"]
    s, b = p["sim"], p["bare_paho_peer"]

    def m(x: float) -> str:
        return f"{x / 1e6:.1f} M"

    lines = [
        "## sim: simulator generation and MQTT publishing",
        "",
        f"DAS {g['channels']} channels at {g['rate_hz']:.0f} Hz, frames of "
        f"{g['frame_samples']} samples, with a leak and sand active"
        + (" (quick run)" if result.get("quick") else "")
        + f"; 1-min load average {result.get('load_avg_1m_at_start', '?')} at the start on "
        f"{result.get('machine', {}).get('cores', '?')} cores (wall-clock rates suffer when "
        "it exceeds the core count; CPU-time rates much less).",
        "",
        "| generation (one core) | samples/s (CPU time) | samples/s (wall) |",
        "|---|---|---|",
        f"| unencoded blocks | {m(g['blocks']['samples_per_s_cpu'])} | "
        f"{m(g['blocks']['samples_per_s_wall'])} |",
        f"| int16 wire frames | {m(g['frames_int16']['samples_per_s_cpu'])} | "
        f"{m(g['frames_int16']['samples_per_s_wall'])} |",
        "",
        f"Target {m(result['generation_target_samples_per_s'])} samples/s: "
        + ("met." if result["generation_meets_target"] else "**not met**."),
        "",
        f"Publishing through Mosquitto (QoS 0, {p['frame_bytes'] / 1024:.0f} KiB frames, "
        "subscriber in another process):",
        "",
        "| publisher | frames sent | received/sent | sent samples/s | received samples/s "
        "| samples per publisher CPU-s |",
        "|---|---|---|---|---|---|",
        f"| simulator | {s['frames_sent']} | {s['received_over_sent']:.3f} | "
        f"{m(s['sent_samples_per_s'])} | {m(s['received_samples_per_s'])} | "
        f"{m(s['sent_samples_per_publisher_cpu_s'])} |",
        f"| bare paho, same payload (peer) | {b['frames_sent']} | "
        f"{b['received_over_sent']:.3f} | {m(b['sent_samples_per_s'])} | "
        f"{m(b['received_samples_per_s'])} | {m(b['sent_samples_per_publisher_cpu_s'])} |",
        "",
        f"Simulator / bare publish rate: {p['sim_over_bare']:.2f}. Generation rate (CPU "
        f"time) / bare rate: {p['generation_over_bare_publish']:.2f} of what paho writes, "
        f"{p.get('generation_over_bare_received', float('nan')):.2f} of what the broker "
        "delivers to the subscriber. Above 1 publishing flat out is limited by paho and "
        "the broker; below 1, by the simulator.",
    ]
    return "\n".join(lines)
