"""Whole runs: recording simulators to files, replay sources, and recording summaries.

The building blocks of ``fiberwatch sim record|replay|info`` (and of the demo), usable
without the command line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_agent import wire
from sensors_sim.config import ConfigError
from sensors_sim.labels import write_labels
from sensors_sim.publisher import Source
from sensors_sim.recording import RecordingError, RecordingWriter, peek, read_frames, read_meta
from sensors_sim.simulator import Simulator


def per_gateway_paths(template: str, sims: Sequence[Simulator]) -> list[Path]:
    """One path per simulator from `template` with ``{site}``/``{gateway}`` placeholders
    (required when there are several simulators)."""
    if len(sims) > 1 and "{site}" not in template and "{gateway}" not in template:
        raise ConfigError(f"{template}: several gateways need {{site}} or {{gateway}} in it")
    return [Path(template.format(site=s.config.site, gateway=s.config.gateway)) for s in sims]


def labels_path(recording: Path) -> Path:
    """Where a recording's ground truth goes: ``run.fwrec`` -> ``run.labels.jsonl``."""
    return recording.with_name(recording.name.removesuffix(".fwrec") + ".labels.jsonl")


def recording_meta(sim: Simulator) -> dict[str, Any]:
    """The header stored in a simulator's recording: names, seed, config and labels."""
    cfg = sim.config
    return {"format": "fwrec", "site": cfg.site, "gateway": cfg.gateway, "seed": sim.seed,
            "config": asdict(cfg), "labels": [lb.to_dict() for lb in sim.labels()]}


def open_writers(sims: Sequence[Simulator], paths: Sequence[Path]) -> list[RecordingWriter]:
    """A `RecordingWriter` per simulator, with its labels written beside the recording
    (none if `paths` is empty)."""
    if not paths:
        return []
    writers = []
    for sim, path in zip(sims, paths, strict=True):
        write_labels(labels_path(path), sim.labels())
        writers.append(RecordingWriter(path, recording_meta(sim)))
    return writers


def record(sims: Sequence[Simulator], paths: Sequence[Path], *,
           stop: threading.Event | None = None,
           on_frame: Callable[[int, str, bytes], None] | None = None) -> list[RecordingWriter]:
    """Simulate each run into its recording (labels beside it) as fast as possible.

    Returns the closed writers (their `frames` and `bytes` counts). Stops early, leaving
    well-formed but shorter files, when `stop` is set.
    """
    writers = open_writers(sims, paths)
    try:
        for i, (sim, w) in enumerate(zip(sims, writers, strict=True)):
            for stream, frame in sim.frames():
                if stop is not None and stop.is_set():
                    return writers
                w.write(frame)
                if on_frame is not None:
                    on_frame(i, stream, frame)
    finally:
        for w in writers:
            w.close()
    return writers


def recorded_source(path: Path, site: str | None = None, gateway: str | None = None) -> Source:
    """A publishing `Source` replaying a recording under its own (or the given) names."""
    meta = read_meta(path)
    site, gateway = site or meta.get("site"), gateway or meta.get("gateway")
    if not site or not gateway:
        raise ConfigError(f"{path}: no site/gateway in the recording; give them explicitly")
    return Source(str(site), str(gateway), _with_stream(path))


def _with_stream(path: Path) -> Iterator[tuple[str, bytes]]:
    for frame in read_frames(path):
        yield peek(frame)[0].label, frame


def summarise(path: Path) -> dict[str, Any]:
    """Per-stream frame counts, sequence gaps, channels and time span of a recording.

    Raises `RecordingError` or `edge_agent.wire.FrameError` on a malformed file.
    """
    meta = read_meta(path)
    streams: dict[str, dict[str, Any]] = {}
    for raw in read_frames(path):
        f = wire.decode(raw)
        s = streams.setdefault(f.kind.label, {"frames": 0, "gaps": 0, "channels": f.n_channels,
                                              "first_ns": f.t0_ns, "last_seq": f.seq - 1})
        if f.seq <= s["last_seq"]:
            raise RecordingError(f"{path}: {f.kind.label} seq {f.seq} after {s['last_seq']}")
        s["gaps"] += f.seq - s["last_seq"] - 1 if s["frames"] else 0
        s["frames"] += 1
        s["last_seq"], s["end_ns"] = f.seq, f.end_ns
    return {"site": meta.get("site"), "gateway": meta.get("gateway"), "seed": meta.get("seed"),
            "labels": len(meta.get("labels", [])), "streams": streams}
