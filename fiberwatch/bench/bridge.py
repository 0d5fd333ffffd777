"""`fiberwatch bench bridge`: the interrogator bridge on 2,048 channels x 2 kHz DAS files.

For each format (DASDAE float32 through `dascore.write`, PRODML int16 through h5py; both
read through DASCore), the simulator writes the same run as rolling files, then:

(a) the peer: DASCore alone reads every file (``dascore.read``, the data materialised as a
    numpy array), the call the bridge itself makes;
(b) the bridge: `edge_agent.bridge.service.Bridge` publishes the directory (read, geometry
    checks, int16/float32 wire frames, SQLite position commits) to a real Mosquitto at QoS 0,
    a subscriber process counting what arrives;
(c) the bridge without the broker (a sink that drops frames): where the time goes.

Samples/s are wall-clock over the whole directory, files warm in the page cache for both
(written just before), DASCore warmed up by one untimed read. ``ratio`` = bridge / DASCore
alone; ``realtime_x`` = bridge samples/s over the 4.1 M samples/s one 2,048 x 2 kHz
interrogator produces.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

CHANNELS = 2048
RATE = 2000.0
FORMATS = (("DASDAE", "float32"), ("PRODML", "int16"))


def _write(directory: Path, fmt: str, dtype: str, files: int, file_s: float) -> list[Path]:
    from sensors_sim import SimConfig, Simulator
    from sensors_sim.files import write_run

    cfg = SimConfig(channels=CHANNELS, das_rate=RATE, seconds=files * file_s,
                    streams=("das",), das_dtype=dtype, start_ns=1_704_067_200 * 10**9)
    return write_run(Simulator(cfg, 1), directory, das_format=fmt, file_s=file_s)


def _dascore_alone(paths: list[Path]) -> dict[str, Any]:
    import dascore as dc
    import numpy as np

    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for p in paths:
        for patch in dc.read(p):
            n += np.asarray(patch.data).size
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"samples": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "samples_per_s": round(n / wall)}


class _Drop:
    def publish(self, stream: str, frame: bytes) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> None:
        pass

    def wait_connected(self, timeout: float) -> bool:
        return True


def _bridge_cfg(watch: Path, state: Path, port: int, fmt: str) -> Any:
    from edge_agent.bridge.config import BridgeConfig

    return BridgeConfig.model_validate({
        "bridge": {"site": "bench", "gateway": "gw", "watch_dir": str(watch),
                   "state_file": str(state), "settle_s": 0.0, "allow_insecure": True},
        "broker": {"host": "127.0.0.1", "port": port},
        "das": {"format": fmt, "channels": CHANNELS, "sample_rate_hz": RATE,
                "scale": 1 / 256, "frame_samples": 100},
    })


def _bridge(watch: Path, tmp: Path, port: int | None, fmt: str) -> dict[str, Any]:
    """Publish the directory once (to the broker on `port`, or to nothing)."""
    from edge_agent.bridge.publish import BridgePublisher
    from edge_agent.bridge.service import Bridge
    from edge_agent.bridge.state import State
    from fiberwatch.bench.sim import _finish, _subscriber

    cfg = _bridge_cfg(watch, tmp / f"state-{fmt}-{port}.sqlite", port or 1883, fmt)
    state = State(cfg.bridge.state_file)
    sub = pub = None
    if port is not None:
        sub = _subscriber(port, _count_frames(watch))
        pub = BridgePublisher(cfg.broker, "bench", "gw", client_id="bench-bridge")
        assert pub.wait_connected(15.0), "no connection to the benchmark broker"
    bridge = Bridge(cfg, pub or _Drop(), state)
    t0, cpu0 = time.perf_counter(), time.process_time()
    done = bridge.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if pub is not None:
        pub.close()
    state.close()
    s = bridge.stats
    out = {"files": done, "frames": s.frames, "samples": s.samples, "errors": s.errors,
           "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "samples_per_s": round(s.samples / wall)}
    if sub is not None:
        got = _finish(sub)
        out["received_frames"] = got["received"]
        out["received_ratio"] = round(got["received"] / max(1, s.frames), 4)
    return out


def _count_frames(watch: Path) -> int:
    import dascore as dc

    total = 0
    for p in sorted(watch.glob("*.h5")):
        for patch in dc.spool(p):
            total += -(-len(patch.get_coord("time")) // 100)
    return total


def run(quick: bool, out_dir: Path) -> dict[str, Any]:  # noqa: ARG001 - the bench interface
    from fiberwatch.services import Mosquitto

    files, file_s = (2, 1.0) if quick else (6, 5.0)
    result: dict[str, Any] = {"quick": quick, "channels": CHANNELS, "rate_hz": RATE,
                              "files_per_format": files, "file_s": file_s,
                              "realtime_samples_per_s": CHANNELS * RATE, "formats": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp_s, \
            Mosquitto(Path(tmp_s) / "mq") as broker:
        tmp = Path(tmp_s)
        for fmt, dtype in FORMATS:
            watch = tmp / fmt
            paths = _write(watch, fmt, dtype, files, file_s)
            _dascore_alone(paths[:1])  # warm-up: DASCore's first read loads its plugins
            alone = _dascore_alone(paths)
            bridged = _bridge(watch, tmp, broker.port, fmt)
            no_broker = _bridge(watch, tmp, None, fmt)
            result["formats"][fmt] = {
                "dtype": dtype, "file_bytes": sum(p.stat().st_size for p in paths),
                "dascore": alone, "bridge": bridged, "bridge_no_broker": no_broker,
                "ratio": round(bridged["samples_per_s"] / alone["samples_per_s"], 3),
                "realtime_x": round(bridged["samples_per_s"] / (CHANNELS * RATE), 2)}
    per = result["formats"].values()
    result["bridge_samples_per_s"] = min(f["bridge"]["samples_per_s"] for f in per)
    result["dascore_samples_per_s"] = min(f["dascore"]["samples_per_s"] for f in per)
    result["ratio"] = min(f["ratio"] for f in per)
    result["realtime_x"] = min(f["realtime_x"] for f in per)
    result["duration_s"] = round(time.perf_counter() - t_start, 1)
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "## bridge",
        "",
        f"`fiberwatch bench bridge{' --quick' if result['quick'] else ''}`: "
        f"{result['channels']:,} channels x {result['rate_hz'] / 1000:g} kHz, "
        f"{result['files_per_format']} files of {result['file_s']:g} s per format, "
        "through a real Mosquitto (QoS 0) with a subscriber. Peer: DASCore reading the same "
        "files alone. One interrogator = "
        f"{result['realtime_samples_per_s'] / 1e6:.1f} M samples/s.",
        "",
        "| format | wire dtype | DASCore alone (samples/s) | bridge -> broker (samples/s) "
        "| ratio | x real time | bridge, no broker (samples/s) | frames received |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fmt, f in result["formats"].items():
        b = f["bridge"]
        lines.append(
            f"| {fmt} | {f['dtype']} | {f['dascore']['samples_per_s'] / 1e6:.1f} M "
            f"| {b['samples_per_s'] / 1e6:.1f} M | {f['ratio']:.2f} | {f['realtime_x']:.1f} "
            f"| {f['bridge_no_broker']['samples_per_s'] / 1e6:.1f} M "
            f"| {b.get('received_frames', '?')}/{b['frames']} |")
    lines += ["", f"Run time: {result['duration_s']:g} s."]
    return "\n".join(lines) + "\n"
