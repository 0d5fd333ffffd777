"""Injected anomalies are where their labels say, detectable by the edge's features, and
nowhere else; the normal background has the variability it claims."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.features import FeatureExtractor, FeatureSpec
from sensors_sim import Label, SimConfig, Simulator, parse_scenario

RATE = 2000
BASE = SimConfig(channels=96, seconds=8.0, surface_per_min=0.0)
BANDS = {f"{lo:g}-{hi:g}": i for i, (lo, hi) in enumerate(FeatureSpec().bands_hz)}
SPEC = FeatureSpec(context_radius=0)


def run(cfg: SimConfig, seed: int = 3) -> tuple[np.ndarray, np.ndarray, list[Label]]:
    """DAS (samples, channels) and DTS (traces, channels) of a whole run, plus labels."""
    sim = Simulator(cfg, seed)
    das, dts = [], []
    for b in sim.blocks():
        (das if b.stream == "das" else dts).append(b.data)
    return np.concatenate(das), np.concatenate(dts), sim.labels()


def with_scenario(spec: str, cfg: SimConfig = BASE) -> tuple[np.ndarray, np.ndarray, Label]:
    das, dts, labels = run(replace(cfg, scenarios=(parse_scenario(spec),)))
    return das, dts, labels[0]


def features(das: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Mean edge features (channels, dim) over the whole 1 s windows inside [t0, t1) s."""
    ex = FeatureExtractor(SPEC)
    rows = [ex.transform(das[round(t * RATE): round(t * RATE) + RATE])
            for t in np.arange(t0, t1 - 1 + 1e-9, 1.0)]
    return np.mean(rows, axis=0)


@pytest.fixture(scope="module")
def baseline() -> tuple[np.ndarray, np.ndarray]:
    das, dts, _ = run(BASE)
    return das, dts


def _sl(label: Label) -> slice:
    return slice(label.ch_start, label.ch_end + 1)


def test_leak_raises_high_bands_in_its_range_only(baseline) -> None:
    das, dts, lb = with_scenario("leak:onset=3,duration=4,channel=40")
    assert (lb.ch_start, lb.ch_end) == (36, 44)
    f_on, f_off = features(das, 3, 7), features(baseline[0], 3, 7)
    gain = f_on[:, BANDS["500-800"]] - f_off[:, BANDS["500-800"]]  # log10
    assert gain[40] > 0.9  # about +10 dB at the centre
    assert gain[_sl(lb)].min() > 0.25  # at least ~+3 dB across the labelled range
    assert np.abs(gain[:20]).max() < 0.1 and np.abs(gain[60:]).max() < 0.1
    before = features(das, 0, 3)[:, BANDS["500-800"]] - features(baseline[0], 0, 3)[:, 6]
    assert np.abs(before).max() < 1e-6
    # DTS: local cooling during the leak, none far away
    j = 6  # trace at t = 6 s
    cooling = dts[j] - baseline[1][j]
    assert cooling[40] < -1.5 and np.abs(cooling[:20]).max() < 0.01


def test_anomaly_changes_nothing_outside_its_time_and_reach(baseline) -> None:
    das, _, lb = with_scenario("sand:onset=2,duration=3,channels=50-60")
    diff = das != baseline[0]
    rows = np.nonzero(diff.any(axis=1))[0]
    cols = np.nonzero(diff.any(axis=0))[0]
    assert cols.min() >= lb.ch_start and cols.max() <= lb.ch_end
    # impacts start inside the interval; their 9 ms ringing may outlast its end
    assert rows.min() >= 2 * RATE and rows.max() < 5 * RATE + 0.01 * RATE


def test_sand_is_impulsive_high_frequency(baseline) -> None:
    das, _, lb = with_scenario("sand:onset=2,duration=5,channels=50-60")
    f_on, f_off = features(das, 2, 7), features(baseline[0], 2, 7)
    kurt = SPEC.names.index("log_kurtosis")
    assert np.median(f_on[_sl(lb), kurt]) > np.log10(8)  # Gaussian noise: log10(3)
    assert np.max(f_off[:, kurt]) < np.log10(4)
    assert np.median(f_on[_sl(lb), BANDS["500-800"]] - f_off[_sl(lb), BANDS["500-800"]]) > 0.5


def test_slug_raises_low_bands_periodically(baseline) -> None:
    das, _, lb = with_scenario("slug:onset=1,duration=7,channels=20-80,period=2")
    ex = FeatureExtractor(SPEC)
    low = [ex.transform(das[i: i + RATE])[:, BANDS["1-10"]] for i in range(RATE, 7 * RATE, 200)]
    base = [ex.transform(baseline[0][i: i + RATE])[:, BANDS["1-10"]]
            for i in range(RATE, 7 * RATE, 200)]
    gain = np.array(low)[:, 50] - np.array(base)[:, 50]
    assert gain.max() > 0.5 and np.percentile(gain, 20) < 0.05  # pulses, not a new level
    spectrum = np.abs(np.fft.rfft(gain - gain.mean()))  # 0.1 s hop: a 2 s period is bin 3
    assert int(np.argmax(spectrum[1:])) + 1 == round(len(gain) * 0.1 / 2)
    assert np.array_equal(das[:, :20], baseline[0][:, :20])


def test_dead_channels_read_zero_in_both_streams(baseline) -> None:
    das, dts, lb = with_scenario("dead:onset=2,duration=3,channels=10-12,stream=both")
    assert lb.streams == ("das", "dts")
    assert not das[2 * RATE: 5 * RATE, 10:13].any()
    assert das[: 2 * RATE, 10:13].any() and das[5 * RATE:, 10:13].any()
    assert not dts[2:5, 10:13].any() and dts[5:, 10:13].all()
    np.testing.assert_array_equal(das[:, 13:], baseline[0][:, 13:])


def test_stuck_channels_hold_one_value() -> None:
    das, _, _ = with_scenario("stuck:onset=2.5,duration=2,channels=30-31")
    held = das[int(2.5 * RATE): int(4.5 * RATE), 30:32]
    assert (held == held[0]).all() and held[0].any()
    assert np.ptp(das[int(4.5 * RATE):, 30]) > 0


def test_spikes_are_isolated_and_large(baseline) -> None:
    das, _, lb = with_scenario("spikes:onset=1,duration=6,channels=70-75,intensity=1")
    changed = das != baseline[0]
    assert changed[:, _sl(lb)].sum() > 20 and not changed[:, :70].any()
    assert np.abs(das - baseline[0]).max() > 25
    rows, cols = np.nonzero(changed)
    for r, c in zip(rows, cols, strict=True):  # single samples: neighbours in time untouched
        assert not (changed[r - 1, c] and changed[r + 1, c])


def test_fiber_break_turns_everything_beyond_into_noise(baseline) -> None:
    das, dts, lb = with_scenario("fiber_break:onset=4,duration=4,channel=80")
    assert (lb.ch_start, lb.ch_end) == (80, 95)
    rms = np.sqrt(np.mean(das[5 * RATE:] ** 2, axis=0))
    assert rms[80:].min() > 3 * rms[:80].max()
    np.testing.assert_array_equal(das[:, :80], baseline[0][:, :80])
    assert np.abs(dts[5:, 80:] - baseline[1][5:, 80:]).mean() > 3


def test_dropped_frames_are_absent_and_labelled() -> None:
    cfg = replace(BASE, scenarios=(parse_scenario("dropped:onset=2,duration=1,stream=both"),
                                   parse_scenario("dropped:onset=5,duration=2,intensity=0.5")))
    sim = Simulator(cfg, seed=4)
    seqs: dict[str, list[int]] = {"das": [], "dts": []}
    for stream, frame in sim.frames():
        seqs[stream].append(wire.decode(frame).seq)
    full, half = sim.labels()
    assert full.dropped_seqs == {"das": list(range(40, 60)), "dts": [2]}
    assert 0 < len(half.dropped_seqs["das"]) < 40
    lost = set(full.dropped_seqs["das"]) | set(half.dropped_seqs["das"])
    assert seqs["das"] == [k for k in range(160) if k not in lost]
    assert seqs["dts"] == [j for j in range(8) if j != 2]


def test_label_times_and_channels_match_the_frames() -> None:
    with pytest.raises(ValueError, match="off the fiber"):
        replace(BASE, scenarios=(parse_scenario("leak:onset=1.5,duration=30,channel=50"),),
                first_channel=1000)
    cfg = replace(BASE, scenarios=(parse_scenario("leak:onset=1.5,duration=30,channel=1050"),),
                  first_channel=1000, start_ns=1_700_000_000_000_000_000)
    sim = Simulator(cfg, 0)
    (lb,) = sim.labels()
    assert lb.start_ns == 1_700_000_001_500_000_000
    assert lb.end_ns == 1_700_000_008_000_000_000  # clipped to the end of the run
    assert (lb.ch_start, lb.ch_end, lb.dist_start_m) == (1046, 1054, 1046.0)
    first = wire.decode(next(iter(sim.frames()))[1])
    assert first.t0_ns == cfg.start_ns and first.first_channel == 1000


def test_flow_rate_scales_flow_noise_and_surface_disturbances_come_and_go() -> None:
    lo, _, _ = run(replace(BASE, flow=0.5, seconds=3.0))
    hi, _, _ = run(replace(BASE, flow=2.0, seconds=3.0))
    band = BANDS["30-80"]
    gain = features(hi, 0, 3)[:30, band] - features(lo, 0, 3)[:30, band]
    assert gain.mean() > 0.4  # 4x flow, about +12 dB where the well flows
    busy, _, _ = run(replace(BASE, surface_per_min=30.0, seconds=8.0))
    quiet, _, _ = run(replace(BASE, seconds=8.0))
    ex = FeatureExtractor(SPEC)
    per_window = [ex.transform(busy[i: i + RATE])[:10, BANDS["10-30"]].max()
                  - ex.transform(quiet[i: i + RATE])[:10, BANDS["10-30"]].max()
                  for i in range(0, 7 * RATE, RATE)]
    assert max(per_window) > 0.3 and min(per_window) < 0.1  # transients, not a new level


def test_normal_background_is_stationary_gaussian_and_within_int16_range(baseline) -> None:
    das = baseline[0]
    kurt = FeatureExtractor(SPEC).transform(das[:RATE])[:, SPEC.names.index("log_kurtosis")]
    assert np.all(np.abs(kurt - np.log10(3)) < 0.1)
    assert np.abs(das).max() < 32767 * BASE.das_scale / 4
    hf = features(das, 0, 8)[:, BANDS["500-800"]]
    assert np.ptp(hf) < 0.15  # the optical floor is the same on every channel
