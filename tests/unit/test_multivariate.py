"""The multivariate (mv) profile, small-data training and calibrated operating points."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.features import FeatureExtractor, FeatureSpec, FeatureSpecError
from edge_agent.metrics import Metrics
from edge_agent.pipeline import StreamPipeline
from edge_agent.thresholds import CALIBRATED, GroupThreshold, calibrated_threshold
from edge_agent.types import Window
from federation.model import datasets
from federation.model.train import TooLittleData, split_validation, train


def _mv_spec(channels: int = 3, lags: int = 4) -> FeatureSpec:
    return FeatureSpec(profile="mv", sample_rate_hz=1.0, window_s=float(lags), hop_s=1.0,
                       bands_hz=(), context_radius=0, channels=channels)


def test_mv_spec_rows_and_hash() -> None:
    spec = _mv_spec()
    assert spec.dim == 12 and spec.names[:5] == ("c0_l0", "c0_l1", "c0_l2", "c0_l3", "c1_l0")
    assert "channels" in spec.to_dict() and FeatureSpec.from_dict(spec.to_dict()) == spec
    das = FeatureSpec()
    assert "channels" not in das.to_dict()  # the per-channel profiles' hashes are unchanged
    window = np.arange(12, dtype=np.float32).reshape(4, 3)  # time-major: 4 samples, 3 columns
    row = FeatureExtractor(spec).transform(window)
    assert row.shape == (1, 12)
    np.testing.assert_array_equal(row[0, :4], window[:, 0])  # column 0's lags first
    with pytest.raises(FeatureSpecError):
        FeatureSpec(profile="mv", sample_rate_hz=1.0, window_s=4.0, hop_s=1.0, bands_hz=())
    with pytest.raises(FeatureSpecError):
        FeatureSpec(profile="raw", sample_rate_hz=1.0, window_s=4.0, hop_s=1.0, bands_hz=(),
                    channels=3)


def test_profile_and_window_from_the_data() -> None:
    assert datasets.choose_profile(5, 1.0) == "mv"
    assert datasets.choose_profile(1, 1.0) == "raw"
    assert datasets.choose_profile(5, 2000.0) == "raw"
    lags, hop, why = datasets.choose_window("mv", 400, 8)
    assert (lags, hop) == (2, 1) and "2 lags" in why
    assert datasets.choose_window("mv", 5000, 3)[0] == datasets.MV_MAX_LAGS
    assert datasets.choose_window("mv", 300, 40)[0] == 1  # many columns, few rows: few lags
    assert datasets.choose_smoothing(400) == 4 and datasets.choose_smoothing(50) == 1
    assert datasets.choose_smoothing(100_000) == datasets.MV_MAX_SPAN
    window, hop, _ = datasets.choose_window("raw", 400, 8)
    assert (window, hop) == (16, 8)
    assert datasets.choose_window("raw", 120, 8)[:2] == (4, 2)


def test_validation_split_and_too_little_data() -> None:
    rows = np.arange(200, dtype=np.float32).reshape(100, 2)
    fit, held = split_validation(rows, 0.2, gap=3)
    assert len(held) == 20 and len(fit) == 77 and fit[-1, 0] < held[0, 0]
    with pytest.raises(TooLittleData, match="need at least 60 to train plus 20"):
        train(rows[:70], validation=0.2, min_rows=60)


def test_small_data_trains_and_holds_back() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2)).astype(np.float32)
    rows = np.c_[z, z @ np.array([[1.0], [0.5]], np.float32)]  # a third, dependent column
    model, summary, held = train(rows, validation=0.2, robust=True, min_rows=60, epochs=1)
    assert summary["held_back_rows"] == len(held) == 80 and summary["rows"] == 320
    assert summary["epochs"] > 1  # more epochs on few rows
    assert summary["normalization"] == "robust"


def test_calibrated_threshold_is_conformal() -> None:
    rng = np.random.default_rng(1)
    cal = rng.exponential(size=999)
    t = calibrated_threshold(cal, 0.01)
    assert t == np.sort(cal)[989]  # ceil(1000 * 0.99) = 990th smallest
    fresh = rng.exponential(size=200_000)
    assert np.mean(fresh > t) < 0.013  # at most the rate, up to sampling error
    assert calibrated_threshold(cal, 1e-5) > cal.max()  # beyond the data: a fitted tail


def test_knob_maps_to_a_rate_per_window() -> None:
    cfg = ThresholdConfig(false_alarms_per_day=8.64)
    assert cfg.rate_per_window(1.0) == pytest.approx(1e-4)
    assert cfg.for_hop(10.0).false_alarm_rate == pytest.approx(1e-3)
    assert ThresholdConfig().rate_per_window(1.0) == ThresholdConfig().false_alarm_rate
    assert ThresholdConfig().rate_per_window(1.0, "mv") == 0.01  # the 99 % control limit
    assert ThresholdConfig(false_alarm_rate=1e-4).rate_per_window(1.0, "mv") == 1e-4
    assert cfg.rate_per_window(1.0, "mv") == pytest.approx(1e-4)  # the knob wins


class _Calibrated:
    version, package_hash, feature_spec_hash = "m", "h", ""
    calibration_scores = np.linspace(0.0, 10.0, 101)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.abs(rows).sum(axis=1)

    def score_columns(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contrib = np.abs(rows).reshape(len(rows), 3, -1).sum(axis=2)
        return contrib.sum(axis=1), contrib


def test_calibrated_groups_start_at_their_floor() -> None:
    cfg = ThresholdConfig(false_alarm_rate=0.05)
    thr = GroupThreshold.for_detector(2, cfg, _Calibrated())
    assert (thr.method == CALIBRATED).all()
    np.testing.assert_allclose(thr.thresholds, calibrated_threshold(
        _Calibrated.calibration_scores, 0.05))
    assert thr.classify(np.array([100.0, 0.0])).tolist() == [True, False]
    start = thr.thresholds.copy()
    for _ in range(200):  # a slow fault below the threshold is not learned as normal
        thr.learn(np.array([start[0] * 0.9, 0.1]))
    np.testing.assert_array_equal(thr.thresholds, start)
    eight = GroupThreshold.for_detector(2, cfg, _Calibrated(), rows_per_group=8)
    assert eight.floor == calibrated_threshold(_Calibrated.calibration_scores, 0.05 / 8)
    assert eight.floor > thr.floor  # a group's max over 8 channels: each at rate / 8


class _Slot:
    def __init__(self, det: object) -> None:
        self.active = det

    def apply_pending(self) -> bool:
        return False

    def report_latency(self, ms: float) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.events: list = []

    def send_event(self, e: object) -> None:
        self.events.append(e)

    def send_summary(self, s: object) -> None:
        pass


def test_pipeline_scores_one_mv_row_per_window() -> None:
    stream = StreamConfig(kind="dts", profile="mv", channels=3, sample_rate_hz=1.0,
                          window_s=4.0, hop_s=1.0, bands_hz=[], context_radius=0)
    pipe = StreamPipeline(site="s", gateway="g", stream=stream,
                          thresholds=ThresholdConfig(false_alarm_rate=0.05),
                          events=EventConfig(),
                          slot=_Slot(_Calibrated()), sink=_Sink(), metrics=Metrics())
    assert pipe.n_groups == 1 and pipe.stream.group_size == 3
    data = np.zeros((4, 3), np.float32)
    data[:, 2] = 5.0  # column 2 drives the score
    w = Window("dts", data, 0, 4_000_000_000, 0, (), None, False, 0)
    s = pipe.process(w)
    assert s.scores.shape == (3,) and np.all(s.scores == 20.0)
    np.testing.assert_allclose(s.contributions, [0.0, 0.0, 20.0])
    assert s.flagged.tolist() == [True]  # above the calibrated floor from the first window


def test_public_bench_metrics_and_baselines() -> None:
    from fiberwatch.bench.public import Baselines, point_metrics

    m = point_metrics(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, 1], bool))
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1) and m["far"] == 0.5
    assert m["f1"] == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1000, 2))
    x = np.c_[z, z.sum(axis=1) + 0.05 * rng.normal(size=1000)]
    base = Baselines(x, alpha=0.02)
    normal = np.c_[rng.normal(size=(2000, 2)), np.zeros(2000)]
    normal[:, 2] = normal[:, :2].sum(axis=1) + 0.05 * rng.normal(size=2000)
    broken = normal.copy()
    broken[:, 2] += 1.0  # each column in range, the relation broken
    assert base.flags(normal)["pca_t2_spe"].mean() < 0.05
    assert base.flags(broken)["pca_t2_spe"].mean() > 0.9


def test_gateway_config_runs_an_mv_stream(tmp_path) -> None:
    from pathlib import Path

    from edge_agent.config import load_gateway_config

    src = Path(__file__).resolve().parents[2] / "firmware_configs" / "gateways" / "well-a.toml"
    text = src.read_text()
    i = text.index("[[streams]]\nkind = \"dts\"")
    j = text.index("[model]")
    mv = ('[[streams]]\nkind = "dts"\ninterrogator = "dts-well-a"\nchannels = 3\n'
          'sample_rate_hz = 1.0\nwindow_s = 2.0\nhop_s = 1.0\nprofile = "mv"\n\n')
    p = tmp_path / "gw.toml"
    p.write_text(text[:i] + mv + text[j:])
    stream = load_gateway_config(p).stream("dts")
    t = np.arange(400) * 1_000_000_000
    spec, _ = datasets.csv_spec(t, 3)  # what `model train --csv` builds for such a file
    assert stream.feature_spec().hash == spec.hash  # so its packages load on this stream


def test_mv_stream_runs_on_the_startup_detector() -> None:
    """Before any package arrives the gateway scores with `RobustZDetector`: an mv stream
    runs through it (one row a window, learned from normal windows) and scores a jump."""
    from edge_agent.detectors.stats import RobustZDetector
    from edge_agent.offline import OfflineScorer, csv_frames, stream_config_for

    spec = _mv_spec()
    stream = stream_config_for(spec, channels=3)
    det = RobustZDetector(spec.dim, feature_spec_hash=spec.hash)
    seen: list = []
    scorer = OfflineScorer(det, stream, spec=spec, on_window=seen.append,
                           thresholds=ThresholdConfig(false_alarm_rate=1e-3, warmup_windows=40))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    x[500:, 1] += 25.0
    t = np.arange(600, dtype=np.int64) * 1_000_000_000
    scorer.run(csv_frames(t, x, kind="dts", rate=1.0))
    assert len(seen) == 597 and all(s.rows.shape == (3, spec.dim) for s in seen[:3])
    assert all(s.contributions is None for s in seen)  # no per-column parts from this one
    before = np.median([s.scores[0] for s in seen[400:490]])
    assert seen[500].scores[0] > 5 * before and len(set(seen[500].scores.tolist())) == 1


def test_shuttle_is_read_from_the_installed_package() -> None:
    from fiberwatch.bench.public import load_shuttle

    x, y = load_shuttle()
    assert x.shape == (49_097, 9) and 0.06 < y.mean() < 0.08  # ODDS form: ~7 % anomalies


def test_mv_window_of_one_row() -> None:
    spec = FeatureSpec(profile="mv", sample_rate_hz=1.0, window_s=1.0, hop_s=1.0, bands_hz=(),
                       context_radius=0, channels=9)
    assert spec.dim == 9 and spec.window_samples == 1
    t = np.arange(300) * 1_000_000_000
    assert datasets.csv_spec(t, 9, profile="mv", window=1)[0] == spec
    with pytest.raises(FeatureSpecError):
        FeatureSpec(profile="raw", sample_rate_hz=1.0, window_s=1.0, hop_s=1.0, bands_hz=())


def test_mv_normal_rows_are_learned_once_per_window() -> None:
    class _Buffer:
        def __init__(self) -> None:
            self.rows: list[np.ndarray] = []

        def append(self, rows: np.ndarray, *_origin: np.ndarray) -> None:
            self.rows.append(rows)  # (each row's window start and channel follow)

    stream = StreamConfig(kind="dts", profile="mv", channels=3, sample_rate_hz=1.0,
                          window_s=4.0, hop_s=1.0, bands_hz=[], context_radius=0)
    buf = _Buffer()
    pipe = StreamPipeline(site="s", gateway="g", stream=stream,
                          thresholds=ThresholdConfig(false_alarm_rate=0.05),
                          events=EventConfig(), slot=_Slot(_Calibrated()), sink=_Sink(),
                          metrics=Metrics(), normal_buffer=buf)
    for i in range(10):
        pipe.process(Window("dts", np.full((4, 3), 0.01, np.float32), i, i + 4, 0, (), None,
                            False, i))
    pipe.flush()
    rows = np.concatenate(buf.rows)
    assert rows.shape == (10, 12)  # one row per window, not one per column
    assert pipe.recent_rows().shape[0] == 8  # smoke_windows of one row each


def test_semicolon_csv_with_label_columns(tmp_path) -> None:
    """A SKAB-style file: ``;``-separated, ``datetime`` first, ground truth at the end."""
    from edge_agent.offline import read_csv, read_csv_times

    p = tmp_path / "skab-like.csv"
    lines = ["datetime;Pressure;Temperature;anomaly;changepoint"]
    for i in range(5):
        lines.append(f"2020-03-09 10:14:{33 + i};0.{i};89.{i};{i % 2}.0;0.0")
    p.write_text("\n".join(lines) + "\n")
    t, x, names = read_csv(p)
    assert names == ["Pressure", "Temperature"] and x.shape == (5, 2)  # no label columns
    assert read_csv_times(p)[0] == "2020-03-09 10:14:33" and t[1] - t[0] == 1_000_000_000



def test_robust_scale_of_degenerate_columns() -> None:
    from federation.model.task import STD_FLOOR, prepare_and_fit, robust_center_scale

    x = np.zeros((100, 3), np.float32)
    x[:, 0] = np.random.default_rng(0).normal(size=100)
    x[:, 1] = 32.0  # constant in training: any later change is new
    x[::10, 2] = 1.0  # mostly constant: IQR 0, std not
    med, scale = robust_center_scale(x)
    assert 0.7 < scale[0] < 1.3 and med[1] == 32.0 and scale[1] < STD_FLOOR
    assert scale[2] == pytest.approx(0.5 * x[:, 2].std(), rel=1e-5)
    model, _ = prepare_and_fit(x, robust=True, epochs=1)
    assert float(model.std[1]) == pytest.approx(STD_FLOOR)  # the model's floor applies


def test_public_section_renders() -> None:
    from fiberwatch.bench.public import point_metrics, to_markdown

    m = point_metrics(np.array([1, 0, 1], bool), np.array([1, 0, 0], bool))
    tep = {"dataset": "d", "quick": True, "faults": {"idv01": dict.fromkeys(
               ("model", "pca_t2_spe", "iforest"), m)},
           "pooled": dict.fromkeys(("model", "pca_t2_spe", "iforest"), m),
           "protocol": {"alpha": 0.01, "false_alarms_per_day": 24.0, "sample_s": 36.0,
                        "columns": 22, "train_rows": 400, "normal_rows": 150,
                        "fault_rows": 250}}
    own = {**tep, "protocol": {**tep["protocol"], "train_rows": 400, "normal_rows": 100}}
    text = to_markdown({"tep": tep, "tep_own": own, "shuttle": {"skipped": "x"}})
    assert "| fiberwatch mv (int8 linear AE: T²+SPE, CLI) | 0.667 |" in text
    assert "idv01 0.67" in text
    assert "one model per recording" in text and "its own first 400 normal rows" in text
    assert "Skipped: nope" in to_markdown({"tep": {"skipped": "nope"}})
