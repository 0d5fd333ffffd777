"""Adaptive per-group thresholds: POT/GPD with an empirical fallback, warm-up, no learning
from excluded groups, pure classification."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import ThresholdConfig
from edge_agent.thresholds import (
    EMPIRICAL,
    GPD,
    WARMUP,
    GroupThreshold,
    _gpd_pwm,
    fit_tail,
    group_max,
)


def _cfg(**kw) -> ThresholdConfig:
    base = {"false_alarm_rate": 1e-3, "warmup_windows": 40, "history_windows": 2000,
            "quarantine_windows": 0}
    return ThresholdConfig(**{**base, **kw})


def test_group_max_handles_a_short_last_group() -> None:
    s = np.array([1, 5, 2, 0, 9, 3, 4], np.float32)
    assert group_max(s, 3).tolist() == [5, 9, 4]


@pytest.mark.parametrize("xi", [-0.2, 0.0, 0.25])
def test_pwm_recovers_gpd_parameters(xi: float) -> None:
    rng = np.random.default_rng(1)
    u = rng.random(20_000)
    y = -np.log(u) if xi == 0 else (u ** -xi - 1) / xi  # GPD(xi, sigma=1) by inversion
    fit = _gpd_pwm(np.sort(y * 2.0))
    assert fit is not None
    assert fit[0] == pytest.approx(xi, abs=0.05)
    assert fit[1] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(
    ("draw", "true_q"),
    [
        (lambda r, n: r.exponential(size=n), np.log(1000)),  # 99.9 % quantile
        (lambda r, n: r.normal(size=n), 3.090),
    ],
)
def test_fit_tail_extrapolates_to_the_target_rate(draw, true_q) -> None:
    rng = np.random.default_rng(2)
    thresholds = [fit_tail(draw(rng, 2000), 1e-3, margin=0.0)[0] for _ in range(20)]
    assert np.median(thresholds) == pytest.approx(true_q, rel=0.1)


@pytest.mark.parametrize("n", [40, 400, 2000])
def test_realised_false_alarm_rate_stays_near_or_below_target(n: int) -> None:
    rng = np.random.default_rng(7)
    rate = 1e-3
    big = np.sort(rng.normal(size=1_000_000))
    realised = [1 - np.searchsorted(big, fit_tail(rng.normal(size=n), rate)[0]) / big.size
                for _ in range(100)]
    assert np.mean(realised) <= 1.5 * rate
    if n == 2000:
        assert np.mean(realised) >= 0.2 * rate  # conservative, not blind


def test_fit_tail_falls_back_with_too_few_points() -> None:
    x = np.random.default_rng(3).exponential(size=30)
    t, method = fit_tail(x, 1e-3)
    assert method == EMPIRICAL
    assert t >= x.max()  # the target rate lies beyond the data: extended, never below the max


def test_fit_tail_uses_the_quantile_when_it_exists_in_the_data() -> None:
    x = np.arange(1000, dtype=float)
    t, method = fit_tail(x, 0.1, min_exceedances=20, tail_fraction=0.05)
    assert method == EMPIRICAL and t == pytest.approx(900, abs=1)


def test_fit_tail_rejects_a_tail_the_gpd_does_not_fit() -> None:
    # two point masses: no GPD describes the excesses -> empirical
    x = np.r_[np.zeros(900), np.full(100, 5.0)]
    assert fit_tail(x, 1e-3)[1] == EMPIRICAL


def test_a_tail_heavier_than_the_gpd_range_is_not_cut_to_the_history_maximum() -> None:
    # GPD(xi=0.8) samples: the PWM shape lands above the accepted range; the exponential
    # fallback sat at the history's maximum (a rate near 1/n, several times the target)
    rng = np.random.default_rng(11)

    def draw(n: int) -> np.ndarray:
        return (rng.random(n) ** -0.8 - 1) / 0.8

    big = np.sort(draw(4_000_000))
    rate, new, old = 1e-4, [], []
    for _ in range(40):
        x = draw(2000)
        t, method = fit_tail(x, rate)
        assert method == GPD
        t_old, _ = fit_tail(x, rate, heavy_tail=False)
        assert t >= t_old
        new.append(1 - np.searchsorted(big, t) / big.size)
        old.append(1 - np.searchsorted(big, t_old) / big.size)
    assert np.mean(old) > 2.5 * rate  # what the fallback did: about 1/n, not the rate
    assert np.mean(new) < 0.7 * np.mean(old)


def test_heavy_cap_bounds_a_heavy_tail_to_a_multiple_of_the_history_maximum() -> None:
    # the gateway's rate (1e-6) from a 2,000-window history of GPD(xi=0.8) scores: the heavy
    # extrapolation lands far above the history; capped, at most cap x its maximum, never
    # below the exponential fallback (cap 1 = that fallback)
    rng = np.random.default_rng(5)
    for _ in range(10):
        x = 3.0 + (rng.random(2000) ** -0.8 - 1) / 0.8
        free, m = fit_tail(x, 1e-6)
        old, _ = fit_tail(x, 1e-6, heavy_tail=False)
        capped, m2 = fit_tail(x, 1e-6, heavy_cap=2.0)
        assert m == m2 == GPD and free > 2.0 * x.max() >= old
        assert capped == pytest.approx(2.0 * x.max())
        assert fit_tail(x, 1e-6, heavy_cap=1.0)[0] == pytest.approx(old)
    light = rng.exponential(size=2000)  # a tail the GPD fit accepts: the cap does nothing
    assert fit_tail(light, 1e-6, heavy_cap=1.0) == fit_tail(light, 1e-6)


def test_group_thresholds_apply_the_configured_heavy_cap() -> None:
    cap = ThresholdConfig().heavy_tail_cap
    assert cap is not None and ThresholdConfig(heavy_tail_cap=0).heavy_tail_cap is None
    rng = np.random.default_rng(6)
    hist = 3.0 + (rng.random((2000, 1)) ** -0.8 - 1) / 0.8
    thr = {}
    for c in (cap, None):
        g = GroupThreshold(1, _cfg(false_alarm_rate=1e-6, heavy_tail_cap=c), refit_every=1)
        for row in hist:
            g.learn(row.astype(np.float32))
        thr[c] = float(g.thresholds[0])
    assert thr[cap] == pytest.approx(cap * hist.max(), rel=1e-6)
    assert thr[None] > 2 * thr[cap]


def test_neighbouring_groups_share_the_largest_fit() -> None:
    rng = np.random.default_rng(12)
    scale = np.array([1.0, 1.0, 10.0, 1.0, 1.0, 1.0])
    never = np.array([False] * 5 + [True])  # group 5 never learns: it stays warming up

    def warmed(r: int) -> GroupThreshold:
        thr = GroupThreshold(6, _cfg(warmup_windows=50, neighbour_groups=r), refit_every=1)
        for _ in range(200):
            thr.learn(rng.exponential(size=6) * scale, exclude=never)
        return thr

    own = warmed(0)
    assert np.array_equal(own.thresholds[:5], own.fitted[:5])
    thr = warmed(1)
    f = thr.fitted
    assert f[2] > 5 * max(f[0], f[1], f[3], f[4])
    assert thr.thresholds[1] == thr.thresholds[3] == f[2] == thr.thresholds[2]
    assert thr.thresholds[0] == max(f[0], f[1]) and thr.thresholds[4] == max(f[3], f[4])
    assert np.isinf(thr.thresholds[5]) and np.isinf(f[5])  # no flag while warming up...
    assert not thr.classify(np.full(6, 1e9))[5]  # ...and no say over group 4 above


def test_no_flag_before_warmup_then_thresholds_exist() -> None:
    thr = GroupThreshold(4, _cfg(warmup_windows=50))
    rng = np.random.default_rng(4)
    for _ in range(49):
        g = rng.exponential(size=4)
        assert not thr.classify(g * 100).any()
        thr.learn(g)
    assert (thr.method == WARMUP).all() and not thr.warm
    thr.learn(rng.exponential(size=4))
    assert thr.warm and np.isfinite(thr.thresholds).all()
    assert set(thr.method.tolist()) <= {GPD, EMPIRICAL}
    assert thr.classify(np.full(4, 1e6)).all()


def test_excluded_groups_never_learn() -> None:
    thr = GroupThreshold(2, _cfg(warmup_windows=10))
    for _ in range(100):
        thr.learn(np.array([1.0, 1000.0]), exclude=np.array([False, True]))
    assert thr.count.tolist() == [100, 0]
    assert np.isinf(thr.thresholds[1])
    assert thr.reported()[1] == 0.0


def test_min_threshold_is_a_floor() -> None:
    thr = GroupThreshold(1, _cfg(warmup_windows=10, min_threshold=50.0))
    for _ in range(10):
        thr.learn(np.array([1.0]))
    assert thr.thresholds[0] == 50.0


def test_quarantine_holds_scores_for_q_windows() -> None:
    thr = GroupThreshold(2, _cfg(warmup_windows=10, quarantine_windows=5))
    for k in range(1, 15):
        thr.learn(np.array([1.0, 2.0]))
        assert thr.count.tolist() == [max(0, k - 5)] * 2
    assert not thr.warm
    thr.learn(np.array([1.0, 2.0]))
    assert thr.warm


def _ramp_then_flag(q: int) -> tuple[float, float]:
    """Warm up one group on normal scores, then an anomaly's rising edge: 8 windows below
    the threshold, then flagged windows; (threshold before, threshold after)."""
    thr = GroupThreshold(1, _cfg(warmup_windows=200, false_alarm_rate=1e-4,
                                 quarantine_windows=q), refit_every=1)
    rng = np.random.default_rng(7)
    for _ in range(300):
        thr.learn(rng.exponential(size=1))
    before = float(thr.thresholds[0])
    for k in range(8):  # rising, but never flagged
        score = np.array([before * (0.6 + 0.05 * k)])
        assert not thr.classify(score).any()
        thr.learn(score)
    for _ in range(4):
        thr.learn(np.array([before * 5]), exclude=np.array([True]))
    for _ in range(q):  # the quarantine drains with normal scores
        thr.learn(rng.exponential(size=1))
    return before, float(thr.thresholds[0])


def test_quarantine_drops_the_rising_edge_of_an_anomaly() -> None:
    before, after = _ramp_then_flag(q=10)
    assert after <= before * 1.25  # only the noise of 10 more normal windows
    before0, after0 = _ramp_then_flag(q=0)  # the same edge learned at once: ~6x
    assert after0 > before0 * 3


def test_refits_are_spread_over_windows() -> None:
    thr = GroupThreshold(40, _cfg(warmup_windows=10), refit_every=20)
    rng = np.random.default_rng(5)
    for _ in range(10):
        thr.learn(rng.exponential(size=40))
    before = thr.thresholds.copy()
    for _ in range(5):  # with stationary data every group is not refitted at once
        thr.learn(rng.exponential(size=40) * 10)
    changed = int((thr.thresholds != before).sum())
    assert 0 < changed < 40


@settings(max_examples=40, deadline=None)
@given(scores=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=60, max_size=400),
       rate=st.sampled_from([1e-4, 1e-3, 1e-2, 0.1]))
def test_threshold_is_finite_and_not_below_the_tail(scores, rate) -> None:
    x = np.asarray(scores)
    t, _ = fit_tail(x, rate)
    assert np.isfinite(t)
    assert t >= np.quantile(x, 0.5)
    # classify is pure: same input, same output, no state change
    thr = GroupThreshold(1, _cfg(warmup_windows=60, false_alarm_rate=rate))
    for v in x:
        thr.learn(np.array([v]))
    state = (thr.thresholds.copy(), thr.count.copy(), thr._hist.copy())
    a = thr.classify(np.array([t]))
    b = thr.classify(np.array([t]))
    assert a.tolist() == b.tolist()
    assert np.array_equal(state[0], thr.thresholds) and np.array_equal(state[2], thr._hist)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(0.01, 1e4), shift=st.floats(-1e3, 1e3))
def test_fit_tail_is_equivariant_to_affine_transforms(scale, shift) -> None:
    x = np.random.default_rng(6).gamma(2.0, size=1000)
    t, m = fit_tail(x, 1e-3)
    t2, m2 = fit_tail(x * scale + shift, 1e-3)
    assert m == m2
    assert t2 == pytest.approx(t * scale + shift, rel=1e-4, abs=1e-6 * scale + 1e-9)


def test_the_warm_up_is_stream_time_unless_only_windows_are_given() -> None:
    from edge_agent.config import ThresholdConfig

    d = ThresholdConfig()
    assert d.warmup_s == 300.0
    assert d.for_hop(0.5).warmup_windows == 600  # das: 5 minutes of 0.5 s hops
    assert d.for_hop(5.0).warmup_windows == 60  # dts
    assert d.for_hop(0.5, "mv").warmup_windows == d.warmup_windows  # calibrated instead
    assert ThresholdConfig(warmup_windows=20).for_hop(0.5).warmup_windows == 20
    assert ThresholdConfig(warmup_windows=20, warmup_s=30).for_hop(0.5).warmup_windows == 60
    assert ThresholdConfig(history_windows=400).for_hop(0.1).warmup_windows == 400  # capped
    g = GroupThreshold(3, ThresholdConfig(quarantine_windows=0).for_hop(0.5))
    for _ in range(599):
        g.learn(np.ones(3))
    assert not g.classify(np.full(3, 1e9)).any()  # still warming up: nothing flags
    g.learn(np.ones(3))
    assert g.classify(np.full(3, 1e9)).all()
