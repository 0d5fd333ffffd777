"""Training rows come from the gateway's own windows and features."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.feature_stream import StreamingFeatures
from edge_agent.features import FeatureExtractor
from edge_agent.windowing import StreamBuffer
from federation.model import datasets
from sensors_sim import SimConfig, Simulator, parse_scenario


def test_simulated_rows_equal_the_extractor_on_plain_windows() -> None:
    cfg = SimConfig(channels=24, seconds=4.0, streams=("das",), das_dtype="float32",
                    scenarios=(parse_scenario("leak:onset=1,duration=2,channel=12"),))
    fs = datasets.simulate(cfg, seed=3)
    spec = datasets.DAS_SPEC
    data = np.concatenate([b.data for b in Simulator(cfg, seed=3).blocks()])
    fx = FeatureExtractor(spec)
    n, hop = spec.window_samples, spec.hop_samples
    # a stream's rows: each window's own features, plus (version 3) the slow features
    # over the segments before it
    buf = StreamBuffer("das", 24, 0, spec.sample_rate_hz, window_samples=n, hop_samples=hop)
    sf = StreamingFeatures(FeatureExtractor(spec))
    expect = np.concatenate([sf.rows(w) for w in buf.push(data, cfg.start_ns, 0)])
    own = np.concatenate([fx.transform(data[i:i + n]) for i in range(0, len(data) - n + 1, hop)])
    fast = [i for i, name in enumerate(spec.names) if "lf_" not in name]
    assert fs.n_windows == (len(data) - n) // hop + 1 and fs.n_channels == 24
    np.testing.assert_array_equal(fs.rows, expect)
    np.testing.assert_array_equal(fs.rows[:, fast], own[:, fast])
    truth = fs.truth()
    assert truth.any() and truth[:, 7:18].any() and not truth[:, :5].any()
    assert len(fs.normal_rows()) == int((~truth).sum())


def test_dts_spec_matches_the_gateway_config() -> None:
    from pathlib import Path

    from edge_agent.config import load_gateway_config

    gw = load_gateway_config(Path(__file__).parents[2] / "firmware_configs" / "gateways"
                             / "well-a.toml")
    assert gw.stream("das").feature_spec().hash == datasets.DAS_SPEC.hash
    assert gw.stream("dts").feature_spec().hash == datasets.DTS_SPEC.hash


def test_csv_rows_and_invalid_cells(tmp_path) -> None:
    p = tmp_path / "x.csv"
    rng = np.random.default_rng(0)
    lines = ["ts,a,b,c"]
    for i in range(200):
        vals = rng.normal(size=3)
        cells = [f"{v:.3f}" for v in vals]
        if i == 100:
            cells[1] = ""
        lines.append(f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}," + ",".join(cells))
    p.write_text("\n".join(lines))
    fs = datasets.csv_features(p, window=10, hop=5, profile="raw")
    assert fs.spec.profile == "raw" and fs.spec.dim == 10 and fs.n_channels == 3
    assert fs.channel_names == ["a", "b", "c"]
    assert fs.spec.sample_rate_hz == pytest.approx(1.0)
    bad = ~fs.valid.reshape(fs.n_windows, 3)
    assert bad[:, 1].sum() == 2 and not bad[:, [0, 2]].any()  # two windows hold row 100
    assert len(fs.normal_rows()) == fs.rows.shape[0] - 2
