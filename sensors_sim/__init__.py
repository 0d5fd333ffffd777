"""sensors_sim: a deterministic fiber-optic interrogator simulator (DAS + DTS) with labelled
anomalies, publishing `edge_agent.wire` frames over MQTT.

In-process API (no broker needed)::

    from sensors_sim import SimConfig, Simulator, parse_scenario, write_labels

    cfg = SimConfig(site="well-a", gateway="gw1", channels=1024, seconds=60,
                    scenarios=(parse_scenario("leak:onset=10,duration=20,channel=300"),))
    sim = Simulator(cfg, seed=7)
    for stream, frame in sim.frames():      # "das" | "dts", encoded wire frame bytes
        ...                                 # edge_agent.wire.decode(frame) -> Frame
    for block in sim.blocks():              # the same, unencoded: Block(stream, seq, t0_ns,
        ...                                 #   sample_rate, first_channel, data float32)
    labels = sim.labels()                   # ground truth, known before running
    write_labels("run.labels.jsonl", labels)

Same seed + config (scenarios and ``start_ns`` included) gives byte-identical frames with
the same numpy/scipy versions; the default ``start_ns`` is fixed (2024-01-01), pass the wall
clock for live runs. Each scenario
draws from its own random stream, so a run with an anomaly equals the run without it
everywhere the anomaly does not reach.

Building runs:

* `SimConfig` (fiber, sampling, background, ``scenarios``), `Scenario`, `Pump`;
  `parse_scenario("KIND:key=value,...")`, `config_from_dict`, `scenario_from_dict`;
  `load_schedule(path) -> Schedule` (TOML/JSON, one or several gateways);
  `demo_fleet()` (two wells and a pipeline); `random_scenarios(cfg, seed)` (random
  anomalies for training/evaluation sets).
* Kinds (`KINDS`): ``leak``, ``sand``, ``slug`` (process), ``dead``, ``stuck``, ``spikes``,
  ``fiber_break``, ``dropped`` (sensor/interrogator faults); ``valve`` is benign (`BENIGN`:
  a recurring actuator transient, the false alarm an operator labels). Intensity 1.0 is clearly
  detectable (about +10 dB in the kind's band at its centre).

Files:

* ``sensors_sim.recording``: ``.fwrec`` container. `write_frames(path, frames, meta=None)
  -> int`, `read_frames(path) -> Iterator[bytes]` (raw frame bytes), `read_meta(path)`,
  `RecordingWriter`.
* ``sensors_sim.labels``: `Label`, `write_labels(path, labels)`, `read_labels(path)`.

MQTT (``sensors_sim.publisher``): `FramePublisher` (one gateway, QoS 0, bounded queue),
`publish_streams([Source(site, gateway, frames), ...], host, port, realtime=...,
stop=event)`. Frames go to ``edge_agent.topics.raw(site, gateway, stream)``.
"""

from sensors_sim.config import KINDS, ConfigError, Pump, Scenario, SimConfig
from sensors_sim.labels import Label, read_labels, write_labels
from sensors_sim.recording import RecordingError, read_frames, read_meta, write_frames
from sensors_sim.schedule import Schedule, demo_fleet, load_schedule, random_scenarios
from sensors_sim.simulator import Block, Simulator
from sensors_sim.specs import config_from_dict, parse_scenario, scenario_from_dict

__all__ = [
    "KINDS", "Block", "ConfigError", "Label", "Pump", "RecordingError", "Scenario", "Schedule",
    "SimConfig", "Simulator", "config_from_dict", "demo_fleet", "load_schedule",
    "parse_scenario", "random_scenarios", "read_frames", "read_labels", "read_meta",
    "scenario_from_dict", "write_frames", "write_labels",
]
