"""Simulator API: determinism, framing, ordering, and blocks vs frames."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from edge_agent import wire
from sensors_sim import SimConfig, Simulator, demo_fleet, parse_scenario, random_scenarios

CFG = SimConfig(channels=64, seconds=3.0, surface_per_min=20.0, scenarios=(
    parse_scenario("leak:onset=0.5,duration=1,channel=20"),
    parse_scenario("sand:onset=1,duration=1,channels=40-45"),
    parse_scenario("spikes:onset=0.2,duration=2,channels=1-3"),
    parse_scenario("dropped:onset=2,duration=0.5,intensity=0.5"),
))


def digest(sim: Simulator) -> str:
    h = hashlib.sha256()
    for stream, frame in sim.frames():
        h.update(stream.encode() + frame)
    return h.hexdigest()


def test_same_seed_and_config_give_byte_identical_frames() -> None:
    assert digest(Simulator(CFG, 11)) == digest(Simulator(CFG, 11))
    sim = Simulator(CFG, 11)
    assert digest(sim) == digest(sim)  # frames() restarts the run each time


@pytest.mark.parametrize("change", [
    {"seed": 12}, {"gateway": "gw2"}, {"start_ns": CFG.start_ns + 1},
])
def test_seed_gateway_and_start_change_the_frames(change) -> None:
    seed = change.pop("seed", 11)
    assert digest(Simulator(replace(CFG, **change), seed)) != digest(Simulator(CFG, 11))


def test_frames_are_in_sending_order_with_consecutive_seqs() -> None:
    cfg = replace(CFG, scenarios=(), dts_interval_s=0.5, frame_s=0.1)
    sim = Simulator(cfg, 1)
    ends, seqs = [], {"das": [], "dts": []}
    for stream, raw in sim.frames():
        f = wire.decode(raw)
        assert f.kind.label == stream and f.first_channel == 0 and f.n_channels == 64
        ends.append(f.end_ns)
        seqs[stream].append(f.seq)
        if stream == "das":
            assert f.n_samples == 200 and f.sample_rate == 2000.0
        else:
            assert f.n_samples == 1 and f.sample_rate == 2.0
    assert ends == sorted(ends)
    assert seqs == {"das": list(range(30)), "dts": list(range(6))}
    assert sim.n_frames() == {"das": 30, "dts": 6}


def test_frames_decode_to_the_blocks_within_int16_quantisation() -> None:
    sim = Simulator(CFG, 5)
    blocks = list(sim.blocks())
    frames = [wire.decode(f) for _, f in sim.frames()]
    assert [(b.stream, b.seq, b.t0_ns) for b in blocks] == \
        [(f.kind.label, f.seq, f.t0_ns) for f in frames]
    for b, f in zip(blocks, frames, strict=True):
        tol = CFG.das_scale / 2 + 1e-6 if b.stream == "das" else 0.0
        assert np.abs(b.data - f.data).max() <= tol
        assert f.end_ns == b.end_ns


def test_float32_wire_dtype_is_exact_and_blocks_copy_by_default() -> None:
    sim = Simulator(replace(CFG, das_dtype="float32"), 5)
    blocks = list(sim.blocks())
    assert len({id(b.data) for b in blocks}) == len(blocks)
    for b, (_, raw) in zip(blocks, sim.frames(), strict=True):
        np.testing.assert_array_equal(wire.decode(raw).data, b.data)


def test_include_dropped_yields_the_lost_frames_flagged() -> None:
    sim = Simulator(CFG, 2)
    lost = set(sim.labels()[3].dropped_seqs["das"])
    flagged = {b.seq for b in sim.blocks(include_dropped=True) if b.dropped}
    assert flagged == lost and lost


def test_endless_run_keeps_going() -> None:
    sim = Simulator(replace(CFG, seconds=None, scenarios=()), 1)
    assert sim.n_frames() is None
    it = sim.frames()
    n = sum(1 for _ in zip(range(200), it, strict=False))
    assert n == 200


def test_only_requested_streams_are_emitted() -> None:
    sim = Simulator(replace(CFG, streams=("dts",), scenarios=()), 1)
    assert {s for s, _ in sim.frames()} == {"dts"}
    with pytest.raises(ValueError, match="none of which is emitted"):
        Simulator(replace(CFG, streams=("dts",),
                          scenarios=(parse_scenario("sand:onset=1,duration=1"),)), 1)


def test_demo_fleet_and_random_scenarios_build_valid_runs() -> None:
    fleet = demo_fleet(seconds=20, channels=128)
    assert [(c.site, c.gateway, c.geometry) for c in fleet] == [
        ("well-a", "gw1", "well"), ("well-b", "gw2", "well"), ("pipeline-1", "gw3", "pipeline")]
    assert all(Simulator(c, 0).labels() for c in fleet)
    cfg = random_scenarios(SimConfig(channels=128, seconds=600), seed=3, per_minute=3)
    assert 10 < len(cfg.scenarios) < 60
    assert cfg == random_scenarios(SimConfig(channels=128, seconds=600), seed=3, per_minute=3)
    labels = Simulator(cfg, 0).labels()
    assert all(a.end_ns <= b.start_ns for a, b in zip(labels, labels[1:], strict=False))
