"""Score smoothing and the threshold margin of mv packages: one code path online and
offline (`edge_agent.pipeline`), calibrated on held-back scores smoothed the same way."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.inference import smoothing_span, threshold_margin
from edge_agent.metrics import Metrics
from edge_agent.package import PackageError
from edge_agent.pipeline import StreamPipeline
from edge_agent.smoothing import ScoreSmoother, alpha, ewma
from edge_agent.thresholds import GroupThreshold, calibrated_threshold
from edge_agent.types import Window


def test_ewma_is_causal_and_matches_its_definition() -> None:
    x = np.array([0.0, 10.0, 0.0, 0.0, 10.0, 10.0, 10.0])
    a = alpha(3)
    assert a == 0.5
    want, m = [], x[0]
    for v in x:
        m = a * v + (1 - a) * m
        want.append(m)
    np.testing.assert_allclose(ewma(x, 3), want)
    np.testing.assert_array_equal(ewma(x, 1), x)  # span 1: off
    np.testing.assert_allclose(ewma(x[:4], 3), ewma(x, 3)[:4])  # the future changes nothing
    with pytest.raises(ValueError):
        alpha(0)


def test_smoother_skips_non_finite_and_keeps_contributions_summing() -> None:
    s = ScoreSmoother(5)
    assert s.update(2.0, np.array([1.0, 1.0]))[0] == 2.0
    score, contrib = s.update(8.0, np.array([2.0, 6.0]))
    assert score == pytest.approx(2.0 + (8.0 - 2.0) / 3)
    assert contrib is not None and float(contrib.sum()) == pytest.approx(score)
    nan, _ = s.update(float("nan"), np.array([np.nan, 1.0]))
    assert np.isnan(nan) and s.update(score)[0] == pytest.approx(score)  # history kept
    s.reset()
    assert s.update(1.0)[0] == 1.0


def test_manifest_smoothing_and_margin_are_checked() -> None:
    assert smoothing_span({}) == 1 and threshold_margin({}) == 1.0
    assert smoothing_span({"smoothing": {"method": "ewma", "span": 4}}) == 4
    assert threshold_margin({"margin": 1.5}) == 1.5
    for bad in ({"span": 0}, {"span": 2.5}, {"span": True}, {"method": "median", "span": 3},
                {"span": 10**6}):
        with pytest.raises(PackageError):
            smoothing_span({"smoothing": bad})
    for m in (0.5, "2", float("nan"), 1e6, True):
        with pytest.raises(PackageError):
            threshold_margin({"margin": m})


class _Det:
    """A stand-in mv detector: score = sum of |row|, contributions per column."""

    version, package_hash, feature_spec_hash = "m", "h", ""
    calibration_scores = np.linspace(0.0, 10.0, 101)

    def __init__(self, span: int = 1, margin: float = 1.0) -> None:
        self.smoothing_span, self.threshold_margin = span, margin

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.abs(rows).sum(axis=1)

    def score_columns(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contrib = np.abs(rows).reshape(len(rows), 2, -1).sum(axis=2)
        return contrib.sum(axis=1), contrib


def test_margin_multiplies_the_calibrated_threshold() -> None:
    cfg = ThresholdConfig(false_alarm_rate=0.05)
    plain = GroupThreshold.for_detector(1, cfg, _Det())
    wide = GroupThreshold.for_detector(1, cfg, _Det(margin=2.0))
    assert plain.floor == calibrated_threshold(_Det.calibration_scores, 0.05)
    assert wide.floor == pytest.approx(2.0 * plain.floor)


class _Slot:
    def __init__(self, det: object) -> None:
        self.active = det

    def apply_pending(self) -> bool:
        return False

    def report_latency(self, ms: float) -> None:
        pass


class _Sink:
    def send_event(self, e: object) -> None:
        pass

    def send_summary(self, s: object) -> None:
        pass


def _pipe(det: object) -> StreamPipeline:
    stream = StreamConfig(kind="dts", profile="mv", channels=2, sample_rate_hz=1.0,
                          window_s=1.0, hop_s=1.0, bands_hz=[], context_radius=0)
    return StreamPipeline(site="s", gateway="g", stream=stream,
                          thresholds=ThresholdConfig(false_alarm_rate=0.05),
                          events=EventConfig(), slot=_Slot(det), sink=_Sink(),
                          metrics=Metrics())


def _run(pipe: StreamPipeline, x: np.ndarray) -> list:
    return [pipe.process(Window("dts", x[i:i + 1].astype(np.float32), i * 10**9,
                                (i + 1) * 10**9, 0, (), None, False, i))
            for i in range(len(x))]


def test_pipeline_smooths_mv_scores_as_calibrated() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(0.0, 2.0, size=(60, 2)))
    x[30] = 12.0  # one wild row: smoothed, it does not reach the threshold on its own
    x[45:, 1] += 12.0  # a persistent fault: it does
    raw = _run(_pipe(_Det()), x)
    smooth = _run(_pipe(_Det(span=8)), x)
    want = ewma(np.array([s.scores[0] for s in raw]), 8)
    np.testing.assert_allclose([s.scores[0] for s in smooth], want, rtol=1e-5)
    for s in smooth:  # contributions are smoothed with the score: they still sum to it
        assert float(s.contributions.sum()) == pytest.approx(float(s.scores[0]), rel=1e-4)
    assert raw[30].flagged[0] and not smooth[30].flagged[0]
    assert all(s.flagged[0] for s in smooth[50:])


def test_one_wild_held_back_row_widens_but_does_not_become_the_threshold() -> None:
    rng = np.random.default_rng(3)
    held = rng.exponential(size=80)
    wild = held.copy()
    wild[-1] = 400.0  # a glitch at the end of the training file
    clean_t = calibrated_threshold(held, 0.01)  # 80 rows < 1 / rate: a fitted tail
    assert clean_t > held.max() * 0.8
    wild_t = calibrated_threshold(wild, 0.01)  # 1 row in 80 is evidence of a heavy tail
    assert clean_t < wild_t < 400.0 / 2  # but the glitch is not the threshold


def test_package_calibrates_on_smoothed_held_back_scores() -> None:
    from federation.registry.package import _operating_point

    held = np.array([1.0, 1.0, 9.0, 1.0, 1.0, 1.0])
    point = _operating_point(held, 3, 1.5)
    assert point["smoothing"] == {"method": "ewma", "span": 3} and point["margin"] == 1.5
    assert point["calibration"]["scores"] == sorted(ewma(held, 3).tolist())
    plain = _operating_point(held, 1, 1.0)
    assert "smoothing" not in plain and "margin" not in plain  # neutral: older readers agree
    assert plain["calibration"]["scores"] == sorted(held.tolist())


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"smooth": None, "threshold_margin": None, **kw})


def test_train_chooses_smoothing_and_margin_for_mv_only() -> None:
    from edge_agent.features import FeatureSpec
    from federation.model import datasets
    from fiberwatch.cli import UsageError
    from fiberwatch.commands.model import _mv_scoring

    mv = FeatureSpec(profile="mv", sample_rate_hz=1.0, window_s=2.0, hop_s=1.0, bands_hz=(),
                     context_radius=0, channels=3)
    point = _mv_scoring(_args(), mv, 400)
    assert "EWMA over 4 rows" in point.pop("why")
    assert point == {"smoothing_span": 4, "threshold_margin": datasets.MV_THRESHOLD_MARGIN}
    point = _mv_scoring(_args(smooth=1, threshold_margin=1.0), mv, 400)
    assert "(off) (given)" in point.pop("why")
    assert point == {"smoothing_span": 1, "threshold_margin": 1.0}
    with pytest.raises(UsageError):
        _mv_scoring(_args(threshold_margin=0.5), mv, 400)
    assert _mv_scoring(_args(), FeatureSpec(), 400) == {}
    with pytest.raises(UsageError, match="mv models"):
        _mv_scoring(_args(smooth=3), FeatureSpec(), 400)
