"""federation.model.task: the pure-torch API the Flower apps use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.model import task
from federation.model.autoencoder import ARCHS


def _rows(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat = rng.normal(size=(n, 2))
    w = np.random.default_rng(42).normal(size=(2, d))
    return (lat @ w + 0.1 * rng.normal(size=(n, d)) + 3.0).astype(np.float32)


def _model(d: int = 6):
    m = task.build_model(d, arch="ae-16-4", seed=1)
    task.set_normalization(m, *task.stats_mean_std(task.feature_stats(_rows(500, d))))
    return m


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = task.get_weights(task.build_model(6, seed=3))
    b = task.get_weights(task.build_model(6, seed=3))
    assert torch.rand(1) == before  # build_model did not consume the global generator
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in
                   zip(a, task.get_weights(task.build_model(6, seed=4)), strict=True))
    with pytest.raises(ValueError, match="unknown arch"):
        task.build_model(6, arch="nope")
    assert set(ARCHS) >= {"ae-32-8", "ae-16-4"}


def test_weights_round_trip_and_shape_checks() -> None:
    a, b = _model(), task.build_model(6, arch="ae-16-4", seed=9)
    task.set_weights(b, task.get_weights(a))
    x = _rows(50, seed=2)
    np.testing.assert_array_equal(task.score_rows(a, x), task.score_rows(b, x))
    w = task.get_weights(a)
    with pytest.raises(ValueError, match="expected"):
        task.set_weights(b, w[:-1])
    w[0] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        task.set_weights(b, w)


def test_fit_learns_and_is_deterministic() -> None:
    x = _rows(1000)
    m1, m2 = _model(), _model()
    before = task.evaluate(m1, x)["loss"]
    r1 = task.fit(m1, x, epochs=6, lr=1e-2, batch_size=100, seed=7)
    r2 = task.fit(m2, x, epochs=6, lr=1e-2, batch_size=100, seed=7)
    assert r1 == r2 and r1["n"] == 1000
    assert task.evaluate(m1, x)["loss"] < 0.5 * before
    mean_before = m1.mean.clone()
    task.fit(m1, x, epochs=1, lr=3e-3, batch_size=128)
    assert torch.equal(m1.mean, mean_before)  # buffers are never trained


def test_proximal_term_keeps_weights_near_global() -> None:
    x = _rows(400, seed=3)
    g = _model()
    glob = task.get_weights(g)

    def drift(mu: float) -> float:
        m = _model()
        task.set_weights(m, glob)
        task.fit(m, x, epochs=2, lr=1e-2, batch_size=50, proximal_mu=mu, global_weights=glob)
        return sum(float(np.sum((a - b) ** 2)) for a, b in
                   zip(task.get_weights(m), glob, strict=True))

    assert drift(10.0) < 0.5 * drift(0.0)


def test_feature_stats_combine_exactly() -> None:
    x = _rows(1000, seed=4).astype(np.float64)
    parts = [task.feature_stats(x[:100]), task.feature_stats(x[100:700]),
             task.feature_stats(x[700:]), task.feature_stats(x[:0])]
    c = task.combine_stats(parts)
    mean, std = task.stats_mean_std(c)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-4)
    np.testing.assert_allclose(c["min"], x.min(0), rtol=1e-6)
    assert c["count"] == 1000
    with pytest.raises(ValueError):
        task.combine_stats([task.feature_stats(x[:0])])


def test_error_scale_from_client_stats_matches_pooled() -> None:
    m = _model()
    x = _rows(900, seed=5)
    pooled = task.error_scale(m, x)
    split = task.error_scale_from_stats([task.error_stats(m, x[:300]),
                                         task.error_stats(m, x[300:])])
    np.testing.assert_allclose(pooled, split, rtol=1e-5)
    assert np.all(pooled >= task.ERR_FLOOR)
    task.set_error_scale(m, pooled)
    s = task.score_rows(m, x)
    assert 0.5 < float(np.mean(s)) < 2.0  # normal rows score about 1


def test_rows_are_checked() -> None:
    m = _model()
    with pytest.raises(ValueError, match="non-finite"):
        task.score_rows(m, np.full((2, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        task.fit(m, np.zeros((4, 5), np.float32), epochs=1, lr=1e-3, batch_size=2)
