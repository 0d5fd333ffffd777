"""The child processes of `fiberwatch.bench.edge`: the publisher, the counter and the agent
(``python -m fiberwatch.bench._edge_roles ROLE ARGS``), and the simulated frames they send.

Each role prints ``ready`` once set up, waits for a line on stdin (publisher, counter) or for
SIGINT (agent), then prints one JSON line with what it measured.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

CHANNELS = 2048
RATE = 2000.0
FRAME_SAMPLES = 100
SITE, GW = "bench", "edge-1"


def make_frames(path: Path, n_distinct: int) -> None:
    """Simulate `n_distinct` frames (no anomalies); store their int16 payloads and scales."""
    from edge_agent import wire
    from sensors_sim import SimConfig, Simulator

    sim = Simulator(SimConfig(site=SITE, gateway=GW, channels=CHANNELS, das_rate=RATE,
                              frame_s=FRAME_SAMPLES / RATE, streams=("das",),
                              seconds=n_distinct * FRAME_SAMPLES / RATE), seed=1)
    payloads, scales = [], []
    for _stream, frame in sim.frames():
        (*_, scale, plen) = wire.HEADER.unpack_from(frame, 0)
        payloads.append(frame[wire.HEADER_SIZE:wire.HEADER_SIZE + plen])
        scales.append(scale)
    path.write_bytes(b"".join(payloads))
    path.with_suffix(".json").write_text(json.dumps(scales))


def _frames(path: Path) -> list[tuple[bytes, float]]:
    scales = json.loads(path.with_suffix(".json").read_text())
    blob = path.read_bytes()
    size = len(blob) // len(scales)
    return [(blob[i * size:(i + 1) * size], s) for i, s in enumerate(scales)]


def _publisher(port: int, plan: str, frames_path: Path) -> None:
    """Send re-stamped frames (contiguous seq and time) by `plan`; print what was sent.

    `plan` is ``SPEEDxSECONDS`` steps joined by ``,`` (speed 0 = as fast as possible,
    1 = real time), with a 1.5 s pause after each paced step so the receiver can drain.
    """
    from edge_agent import wire
    from sensors_sim.publisher import FramePublisher

    blocks = _frames(frames_path)
    frame_ns = round(FRAME_SAMPLES * 1e9 / RATE)
    t_first = time.time_ns()
    pub = FramePublisher("127.0.0.1", port, SITE, GW, window=16)
    pub.connect()
    print("ready", flush=True)
    sys.stdin.readline()  # go
    k, steps, stop = 0, [], threading.Event()
    for step in plan.split(","):
        speed, seconds = (float(v) for v in step.split("x"))
        start, k0 = time.monotonic(), k
        while time.monotonic() - start < seconds:
            if speed > 0:
                delay = start + (k - k0 + 1) * frame_ns / 1e9 / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            payload, scale = blocks[k % len(blocks)]
            head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, int(wire.StreamKind.DAS),
                                    int(wire.DType.INT16), 0, k, t_first + k * frame_ns, RATE,
                                    0, CHANNELS, FRAME_SAMPLES, scale, len(payload))
            crc = zlib.crc32(payload, zlib.crc32(head))
            pub.publish("das", head + payload + crc.to_bytes(4, "little"))
            k += 1
        pub.flush()
        steps.append({"speed": speed, "t0": start, "t1": time.monotonic(), "frames": k - k0})
        if speed > 0:
            stop.wait(1.5)
    pub.close()
    print(json.dumps({"sent": k, "steps": steps}), flush=True)


def _counter(port: int) -> None:
    """Bare paho subscriber: count frames until stdin says stop; print the rate."""
    import paho.mqtt.client as mqtt

    from edge_agent import topics

    n, first, last = [0], [0.0], [0.0]
    ready = threading.Event()

    def on_message(*_args: object) -> None:
        now = time.monotonic()
        if n[0] == 0:
            first[0] = now
        n[0] += 1
        last[0] = now

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *_: cl.subscribe(topics.raw(SITE, GW, "das"), 0)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait(20)
    print("ready", flush=True)
    sys.stdin.readline()
    c.disconnect()
    c.loop_stop()
    span = last[0] - first[0]
    print(json.dumps({"received": n[0], "span_s": span}), flush=True)


def _agent(config_path: str) -> None:
    """Run the agent until SIGINT; sample its counters; print a JSON result."""
    from edge_agent.config import GatewayConfig
    from edge_agent.main import install_signal_handlers, run
    from edge_agent.metrics import Metrics, rss_mb

    cfg = GatewayConfig.model_validate(json.loads(Path(config_path).read_text()))
    stop, ready, metrics = threading.Event(), threading.Event(), Metrics()
    install_signal_handlers(stop)
    series: list[tuple[float, int, float, float, int]] = []

    def sample() -> None:
        while not stop.wait(0.25):
            c = metrics.snapshot()
            lost = c["gaps"] + sum(c["drops"].values())
            series.append((time.monotonic(), c["samples_scored"], rss_mb(), time.process_time(),
                           lost))

    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(
        run(cfg, stop, metrics=metrics, ready=ready)))
    sampler = threading.Thread(target=sample)
    runner.start()
    sampler.start()
    if ready.wait(30):
        print("ready", flush=True)
    runner.join()
    sampler.join()
    result["series"] = series
    result["latency_hist"] = {"frame_to_score": metrics.latency.to_dict(),
                              "beyond_hop": metrics.latency_newest.to_dict()}
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "publish":
        _publisher(int(argv[1]), argv[2], Path(argv[3]))
    elif role == "counter":
        _counter(int(argv[1]))
    elif role == "agent":
        _agent(argv[1])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
