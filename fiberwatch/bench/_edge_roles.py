"""The child processes of `fiberwatch.bench.edge`: the publisher, the counter and the agent
(``python -m fiberwatch.bench._edge_roles ROLE ARGS``), and the simulated frames they send.

Each role prints ``ready`` once set up, waits for a line on stdin (publisher, counter) or for
SIGINT (agent), then prints one JSON line with what it measured.
"""

from __future__ import annotations

import gc
import json
import os
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


def load_frames(path: Path) -> list[tuple[bytes, float]]:
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

    blocks = load_frames(frames_path)
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


class _GcPauses:
    """The cyclic collector's runs in the agent process once it is `running` (start-up's
    are not counted): count by generation, CPU time."""

    def __init__(self) -> None:
        self.by_gen, self.max_ms, self.total_ms = [0, 0, 0], 0.0, 0.0
        self._t0 = 0.0
        self.running = False
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if not self.running:
            return
        if phase == "start":
            self._t0 = time.thread_time()
            return
        ms = (time.thread_time() - self._t0) * 1e3
        self.by_gen[info["generation"]] += 1
        self.max_ms, self.total_ms = max(self.max_ms, ms), self.total_ms + ms

    def to_dict(self) -> dict[str, Any]:
        return {"collections_by_generation": self.by_gen, "max_cpu_ms": self.max_ms,
                "total_cpu_ms": self.total_ms}


#: thread name prefix -> the role reported in ``thread_cpu_s``
_THREAD_ROLES = (("edge-processor", "processing"), ("features", "feature_pool"),
                 ("paho-mqtt-client-fw-bench-edge-1-ingest", "mqtt_in"))


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of the agent's busy threads by role (Linux /proc/self/task), the rest
    (uplink, model worker, main) as ``other``: which thread bounds the pipeline."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {role: 0.0 for _, role in _THREAD_ROLES} | {"other": 0.0}
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        role = next((r for prefix, r in _THREAD_ROLES if t.name.startswith(prefix)), "other")
        out[role] += cpu
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS (MiB): ``VmHWM``, not ``ru_maxrss``, which Linux carries
    across ``execve`` (a child started by a 700 MB bench process reports 700 MB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _agent(config_path: str) -> None:
    """Run the agent until SIGINT; sample its counters (and when its model package became
    active); print a JSON result."""
    from edge_agent import main as agent_main
    from edge_agent.config import GatewayConfig
    from edge_agent.metrics import Metrics, rss_mb

    cfg = GatewayConfig.model_validate(json.loads(Path(config_path).read_text()))
    stop, ready, metrics = threading.Event(), threading.Event(), Metrics()
    agent_main.install_signal_handlers(stop)
    series: list[tuple[float, int, float, float, int, bool, dict[str, float]]] = []
    slots: dict[str, Any] = {}

    make_slot = agent_main.Deps().slot

    def slot(c: GatewayConfig, s: Any, key: bytes | None) -> Any:
        slots[s.kind] = make_slot(c, s, key)
        return slots[s.kind]

    def sample() -> None:
        measuring = False
        while not stop.wait(0.25):
            packaged = bool(slots) and all(x.active.package_hash for x in slots.values())
            if packaged and not measuring:  # latency from here on: not the package's install
                measuring = True
                metrics.reset_latency()
            c = metrics.snapshot()
            lost = c["gaps"] + sum(c["drops"].values())
            series.append((time.monotonic(), c["samples_scored"], rss_mb(), time.process_time(),
                           lost, packaged, _thread_cpu_s()))

    result: dict[str, Any] = {}
    pauses = _GcPauses()
    deps = agent_main.Deps(slot=slot)
    runner = threading.Thread(target=lambda: result.update(
        agent_main.run(cfg, stop, deps=deps, metrics=metrics, ready=ready)))
    sampler = threading.Thread(target=sample)
    runner.start()
    sampler.start()
    if ready.wait(30):
        pauses.running = True
        print("ready", flush=True)
    runner.join()
    sampler.join()
    result["series"] = series
    result["model"] = {k: x.state()["model_version"] for k, x in slots.items()}
    result["gc"] = pauses.to_dict()
    result["latency_hist"] = {"frame_to_score": metrics.latency.to_dict(),
                              "beyond_hop": metrics.latency_newest.to_dict()}
    result["max_rss_mb"] = _peak_rss_mb()
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
