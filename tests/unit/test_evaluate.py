"""Event-level metrics and the peers, on hand-made events and rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from edge_agent.events import Event, event_id
from federation.model import datasets, peers
from federation.model.evaluate import DetectorRun, event_metrics, pooled, row_auc, table, truth_grid

S = 1_000_000_000
T0 = 1_704_067_200 * S


def _ev(t0: float, t1: float, c0: int, c1: int, peak: float = 5.0) -> Event:
    return Event(id=event_id("s", "g", "das", T0 + round(t0 * S), c0), site="s", gateway="g",
                 stream="das", start_ns=T0 + round(t0 * S), end_ns=T0 + round(t1 * S),
                 ch_start=c0, ch_end=c1, dist_start_m=c0, dist_end_m=c1, peak_score=peak,
                 mean_score=peak / 2, threshold=2.0, severity="high", class_hint="leak",
                 n_windows=2, model_version="m", model_hash="h", detected_ns=0)


def _label(t0: float, t1: float, c0: int, c1: int, kind: str = "leak") -> SimpleNamespace:
    return SimpleNamespace(kind=kind, start_ns=T0 + round(t0 * S), end_ns=T0 + round(t1 * S),
                           ch_start=c0, ch_end=c1, streams=("das",))


def _run(events: list[Event], seconds: float = 3600.0) -> DetectorRun:
    t = T0 + np.arange(0, seconds, 0.5) * S
    return DetectorRun(events, np.zeros((len(t), 100), np.float32), t.astype(np.int64),
                       (t + S).astype(np.int64))


def test_matching_recall_precision_delay_localisation() -> None:
    labels = [_label(100, 110, 45, 55), _label(300, 310, 10, 20), _label(500, 505, 80, 80,
                                                                          "fiber_break")]
    events = [
        _ev(101.0, 104, 48, 54, peak=9),   # hit, centre 51 vs 50
        _ev(106.0, 109, 40, 60, peak=3),   # same label, lower peak
        _ev(700.0, 701, 5, 6),             # false alarm
        _ev(504.5, 520, 83, 99),           # the break, start 3 channels off
    ]
    m = event_metrics(_run(events), labels, n_channels=100, hop_ns=S // 2)
    assert (m["labels"], m["detected"], m["events"], m["false_alarms"]) == (3, 2, 4, 1)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    assert m["delay_s_median"] == pytest.approx((1.5 + 5.0) / 2)
    assert m["loc_err_ch_median"] == pytest.approx(2.0)  # median of 1 and 3
    assert m["loc_within_5ch"] == 1.0
    assert m["channel_hours"] == pytest.approx(100 * (3600.5 / 3600), rel=1e-3)
    assert m["fa_per_1000_ch_h"] == pytest.approx(1 / m["channel_hours"] * 1000)


def test_raised_is_the_first_emission_of_the_earliest_matching_event() -> None:
    labels = [_label(100, 110, 45, 55), _label(300, 310, 10, 20)]
    a, b, c = _ev(100.5, 104, 48, 54), _ev(101.0, 109, 40, 60), _ev(300.5, 305, 12, 14)
    run = _run([a, b, c])
    run.raised_ns = {a.id: T0 + 102 * S, b.id: T0 + 101 * S, c.id: T0 + 303 * S}
    m = event_metrics(run, labels, n_channels=100, hop_ns=S // 2)
    assert m["delay_s_median"] == pytest.approx(1.0)  # onsets: 1.0 and 1.0 (+ one hop)
    assert m["raised_s_median"] == pytest.approx((1.0 + 3.0) / 2)  # b raised first, then c
    assert math.isnan(event_metrics(_run([a]), labels[:1], n_channels=100,
                                    hop_ns=S // 2)["raised_s_median"])  # no emissions known


def test_far_away_or_late_events_do_not_match() -> None:
    labels = [_label(100, 110, 45, 55)]
    m = event_metrics(_run([_ev(101, 104, 70, 72), _ev(113, 115, 45, 55)]), labels,
                      n_channels=100, hop_ns=S // 2)
    assert m["detected"] == 0 and m["false_alarms"] == 2 and m["f1"] == 0.0
    assert math.isnan(m["delay_s_median"])


def test_no_events_no_labels() -> None:
    m = event_metrics(_run([]), [], n_channels=100, hop_ns=S // 2)
    assert m["false_alarms"] == 0 and m["fa_per_1000_ch_h"] == 0.0
    res = {"families": {"normal": {"model": {**m, "row_auc": float("nan")}}}}
    res["pooled"] = pooled(res)
    assert "| normal | model |" in table(res)


def test_truth_grid_and_row_auc() -> None:
    run = _run([], seconds=10)
    truth = truth_grid([_label(2, 4, 10, 12)], run, 0, 100)
    assert truth.sum() == 3 * int(((run.t_start_ns < T0 + 4 * S) &
                                   (run.t_end_ns > T0 + 2 * S)).sum())
    run.scores[truth] = 5.0
    assert row_auc(run, truth) == 1.0
    assert math.isnan(row_auc(run, np.zeros_like(truth)))


def test_eval_scenarios_are_deterministic_and_inside_the_fiber() -> None:
    plan = datasets.EvalPlan(channels=64, n_events=6)
    a = datasets.eval_scenarios(plan, "faults", 3)
    assert a == datasets.eval_scenarios(plan, "faults", 3)
    assert [s.kind for s in a] == ["dead", "stuck", "spikes", "fiber_break"] * 1 + ["dead",
                                                                                     "stuck"]
    for s in a:
        lo = s.ch_start if s.ch_start is not None else s.channel
        hi = s.ch_end if s.ch_end is not None else s.channel
        assert 0 <= lo <= hi < 64
    assert datasets.eval_scenarios(plan, "normal", 3) == ()
    with pytest.raises(ValueError, match="unknown family"):
        datasets.eval_scenarios(plan, "volcano", 3)


@pytest.mark.parametrize("name", peers.PEERS)
def test_peers_score_outliers_higher(name: str) -> None:
    rng = np.random.default_rng(0)
    spec = datasets.DAS_SPEC
    train = rng.normal(size=(3000, spec.dim)).astype(np.float32)
    det = peers.build(name, train, spec)
    assert det.feature_spec_hash == spec.hash and det.version == f"peer-{name}"
    normal = rng.normal(size=(200, spec.dim)).astype(np.float32)
    s_n, s_o = det.score(normal), det.score(normal + 6.0)
    assert s_n.dtype == np.float32 and s_n.shape == (200,)
    assert np.median(s_o) > np.quantile(s_n, 0.95)
    np.testing.assert_array_equal(det.score(normal), s_n)  # pure


def test_main_operating_point_is_the_gateway_default() -> None:
    from edge_agent.config import ThresholdConfig
    from federation.model.evaluate import MAIN_POINT

    assert MAIN_POINT == ThresholdConfig()


def test_detectors_without_package_quantiles_get_their_own_training_quantile() -> None:
    from edge_agent.config import ThresholdConfig
    from federation.model.evaluate import _with_floor

    rows = np.random.default_rng(0).exponential(size=(20_000, 1)).astype(np.float32)
    plain = SimpleNamespace(score=lambda r: r[:, 0])
    packaged = SimpleNamespace(score=plain.score, threshold_quantiles={0.9999: 5.0})
    cfg = ThresholdConfig()
    got = _with_floor(cfg, plain, rows).min_threshold
    assert got == pytest.approx(np.quantile(rows[:, 0], 0.9999), rel=1e-6)
    assert _with_floor(cfg, packaged, rows) is cfg  # the pipeline floors it from its manifest
    assert _with_floor(cfg.model_copy(update={"floor_quantile": None}), plain, rows) \
        .min_threshold == 0.0


def test_model_eval_cli_operating_point_is_the_gateway_default_plus_flags() -> None:
    import argparse

    import pytest

    from edge_agent.config import ThresholdConfig
    from fiberwatch.cli import UsageError
    from fiberwatch.commands.model import _operating_point

    def ns(rate: float | None, q: float | None) -> argparse.Namespace:
        return argparse.Namespace(false_alarm_rate=rate, floor_quantile=q)

    assert _operating_point(ns(None, None)) == ThresholdConfig()
    op = _operating_point(ns(1e-5, 0.0))
    assert op.false_alarm_rate == 1e-5 and op.floor_quantile is None
    assert _operating_point(ns(None, 0.99999)).floor_quantile == 0.99999
    with pytest.raises(UsageError, match="floor"):
        _operating_point(ns(None, 1.5))
