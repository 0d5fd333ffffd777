"""The threshold floor: from the model package's quantiles, following hot swaps, config."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.config import (
    ConfigError,
    EventConfig,
    StreamConfig,
    ThresholdConfig,
    load_gateway_config,
)
from edge_agent.detectors.stats import RobustZDetector
from edge_agent.hot_swap import ModelSlot
from edge_agent.inference import quantile_levels
from edge_agent.metrics import Metrics
from edge_agent.package import PackageError
from edge_agent.pipeline import StreamPipeline
from edge_agent.thresholds import GroupThreshold, threshold_floor
from tests.unit.test_edge_pipeline import FakeSink, feed

STREAM = StreamConfig(kind="das", channels=64, sample_rate_hz=2000.0, window_s=0.5, hop_s=0.25,
                      group_size=8, context_radius=4)
SPEC = STREAM.feature_spec()
Q = {0.5: 1.0, 0.99: 2.0, 0.999: 4.0, 0.9999: 9.0, 1.0: 30.0}


class PackagedDetector:
    """A frozen detector with manifest-like quantiles (stands in for `LiteRTDetector`)."""

    def __init__(self, version: str, quantiles: dict[float, float] | None) -> None:
        self.version, self.package_hash, self.feature_spec_hash = version, "h-" + version, SPEC.hash
        self.threshold_quantiles = quantiles

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(np.square(rows), axis=1)).astype(np.float32)


# -- the floor itself ------------------------------------------------------------------------
def test_default_operating_point() -> None:
    cfg = ThresholdConfig()
    assert (cfg.false_alarm_rate, cfg.floor_quantile, cfg.min_threshold) == (1e-6, 0.9999, 0.0)


def test_floor_is_the_package_quantile_or_min_threshold_if_higher() -> None:
    assert threshold_floor(ThresholdConfig(), Q) == (9.0, 0.9999)
    assert threshold_floor(ThresholdConfig(min_threshold=12.0), Q) == (12.0, 0.9999)
    assert threshold_floor(ThresholdConfig(floor_quantile=0.999), Q) == (4.0, 0.999)


def test_missing_level_takes_the_nearest_higher_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_agent.thresholds"):
        assert threshold_floor(ThresholdConfig(floor_quantile=0.99995), Q) == (30.0, 1.0)
    assert "threshold.floor_quantile=0.99995" in caplog.text and "using level 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_agent.thresholds"):
        # nothing higher: the package's highest level
        assert threshold_floor(ThresholdConfig(), {0.5: 1.0, 0.99: 2.0}) == (2.0, 0.99)
    assert "using level 0.99" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_agent.thresholds"):
        threshold_floor(ThresholdConfig(), Q)
    assert caplog.text == ""


def test_no_quantile_floor_without_a_package_or_when_off() -> None:
    assert threshold_floor(ThresholdConfig(min_threshold=3.0), None) == (3.0, None)
    assert threshold_floor(ThresholdConfig(floor_quantile=None, min_threshold=3.0), Q) == (3.0,
                                                                                         None)
    assert GroupThreshold.for_detector(2, ThresholdConfig(), RobustZDetector(3)).floor == 0.0


def test_fitted_thresholds_never_go_below_the_package_floor() -> None:
    cfg = ThresholdConfig(warmup_windows=20, history_windows=200, false_alarm_rate=1e-3)
    thr = GroupThreshold.for_detector(3, cfg, PackagedDetector("m", {0.9999: 50.0}))
    rng = np.random.default_rng(0)
    for _ in range(60):
        thr.learn(rng.exponential(size=3))
    assert thr.warm and np.all(thr.thresholds == 50.0)
    assert thr.classify(np.array([49.0, 50.0, 51.0])).tolist() == [False, False, True]


# -- manifest and config ---------------------------------------------------------------------
def test_manifest_levels_are_parsed_and_checked() -> None:
    assert quantile_levels({"0.9999": 9.0, "1": 30.0}) == {0.9999: 9.0, 1.0: 30.0}
    with pytest.raises(PackageError, match="threshold.quantiles: level 'p99'"):
        quantile_levels({"p99": 1.0})
    with pytest.raises(PackageError, match="not in"):
        quantile_levels({"99": 1.0})


def test_config_zero_turns_the_quantile_floor_off() -> None:
    assert ThresholdConfig(floor_quantile=0).floor_quantile is None
    assert ThresholdConfig(floor_quantile=1).floor_quantile == 1.0


def test_bad_floor_quantile_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[gateway]\nsite = "s"\nid = "g"\ndata_dir = "d"\n'
                 '[[streams]]\nkind = "das"\nchannels = 8\nsample_rate_hz = 2000.0\n'
                 'window_s = 1.0\nhop_s = 0.5\n[threshold]\nfloor_quantile = 1.5\n')
    with pytest.raises(ConfigError, match=r"gw.toml: threshold.floor_quantile: .*less than or"):
        load_gateway_config(f)


# -- the pipeline: thresholds follow the model -----------------------------------------------
def _frames(first: int, n: int) -> list[bytes]:
    """White-noise frames ``first .. first+n-1`` (100 samples, 50 ms each)."""
    out = []
    for k in range(first, first + n):
        x = np.random.default_rng(k).normal(size=(100, 64)).astype(np.float32)
        out.append(wire.encode(wire.StreamKind.DAS, k, 10**18 + k * 50_000_000, 2000.0, 0, x))
    return out


def _pipeline(slot) -> StreamPipeline:
    return StreamPipeline(
        site="s", gateway="g", stream=STREAM,
        thresholds=ThresholdConfig(warmup_windows=20, history_windows=200),
        events=EventConfig(), slot=slot, sink=FakeSink(), metrics=Metrics(),
        monotonic=lambda: 0.0)


def test_floor_follows_a_hot_swap_and_a_fallback() -> None:
    a = PackagedDetector("m-a", {0.9999: 1e4})
    b = PackagedDetector("m-b", {0.99: 1.0, 0.9999: 2e4, 1.0: 3e4})
    c = PackagedDetector("m-c", {0.9999: 3e4})
    loads = iter([b, c])
    clock = iter(np.arange(0.0, 1e3, 1e-4)).__next__  # 0.1 ms per timing run
    slot = ModelSlot(a, spec_hash=SPEC.hash, public_key=None, latency_budget_ms=50.0,
                     smoke_windows=2, loader=lambda pkg, key: next(loads), clock=clock,
                     fallback_after=2)
    p = _pipeline(slot)
    before = feed(p, _frames(0, 160))
    assert {s.model_version for s in before} == {"m-a"}
    assert np.all(before[-1].thresholds == 1e4)  # warm, and every group at a's floor

    slot.offer(b"package-b", p.recent_rows())
    after = feed(p, _frames(160, 160))
    assert {s.model_version for s in after} == {"m-b"}
    assert np.all(np.isinf(after[0].thresholds)), "fresh thresholds warm up for the new model"
    assert np.all(after[-1].thresholds == 2e4)
    assert p._thresholds[("m-b", "h-m-b")].floor == 2e4

    slot.offer(b"package-c", p.recent_rows())
    feed(p, _frames(320, 30))
    assert p._thresholds[("m-c", "h-m-c")].floor == 3e4
    slot.latency_budget_ms = 0.0  # every window over budget: back to b, its thresholds kept
    back = feed(p, _frames(350, 30))
    assert back[-1].model_version == "m-b" and np.all(back[-1].thresholds == 2e4)
