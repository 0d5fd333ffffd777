"""The mv profile's linear model (arch ``pca``): T^2 + SPE as a linear autoencoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.model import datasets, task
from federation.model.train import train


def _process(n: int, seed: int = 0) -> np.ndarray:
    """Three latent drivers seen through eight correlated columns, on their own scales."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(7).normal(size=(3, 8))
    lat = rng.normal(size=(n, 3)) * np.array([3.0, 1.5, 0.7])
    return (lat @ mix + 0.2 * rng.normal(size=(n, 8))) * np.arange(1, 9) + 50.0


def _t2_spe(fit: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hotelling's T^2 and the SPE of a plain PCA (numpy eigh, k components)."""
    mu = fit.mean(axis=0)
    lam, vec = np.linalg.eigh(np.cov(fit - mu, rowvar=False))
    lam, p = lam[::-1][:k], vec[:, ::-1][:, :k]
    s = (x - mu) @ p
    return (s * s / lam).sum(axis=1), (((x - mu) - s @ p.T) ** 2).sum(axis=1)


def test_the_linear_score_is_t2_plus_spe() -> None:
    rows = _process(600).astype(np.float32)
    model, fit = task.fit_linear(rows)
    assert model.linear and not any("ReLU" in type(m).__name__ for m in model.core)
    assert fit["latent"] == model.latent and 1 <= model.latent < 8
    z_fit = model.normalize(torch.from_numpy(rows)).double().numpy()
    test = _process(200, seed=1).astype(np.float32)
    test[100:, 2] += 5.0  # one column breaks its relation to the others
    z = model.normalize(torch.from_numpy(test)).double().numpy()
    t2, spe = _t2_spe(z_fit, z, model.latent)
    t2_fit, spe_fit = _t2_spe(z_fit, z_fit, model.latent)
    c = spe_fit.mean() / model.latent  # T^2 weighed to the SPE's mean
    want = (spe + c * t2) / (spe_fit + c * t2_fit).mean()  # a training row scores about 1
    np.testing.assert_allclose(task.score_rows(model, test), want, rtol=2e-3)
    score = task.score_rows(model, test)
    assert score[100:].mean() > 3 * score[:100].mean()


def test_spe_only_and_the_variance_picks_k() -> None:
    rows = _process(600).astype(np.float32)
    few, _ = task.fit_linear(rows, variance=0.5)
    many, _ = task.fit_linear(rows, variance=0.999)
    assert few.latent < many.latent <= 7  # a residual always stays
    spe_only, fit = task.fit_linear(rows, t2_weight=0.0)
    assert fit["t2_weight"] == 0.0
    test = _process(50, seed=3).astype(np.float32)
    z_fit = spe_only.normalize(torch.from_numpy(rows)).double().numpy()
    z = spe_only.normalize(torch.from_numpy(test)).double().numpy()
    _, spe = _t2_spe(z_fit, z, spe_only.latent)
    _, spe_fit = _t2_spe(z_fit, z_fit, spe_only.latent)
    np.testing.assert_allclose(task.score_rows(spe_only, test), spe / spe_fit.mean(), rtol=2e-3)


def test_train_fits_pca_without_epochs() -> None:
    rows = _process(400).astype(np.float32)
    model, summary, held = train(rows, arch="pca", validation=0.2, robust=True, min_rows=60)
    assert summary["arch"] == "pca" and summary["epochs"] == 0 and model.linear
    assert summary["latent"] == model.latent and len(held) == 80
    assert model.hyper["linear"] is True and "linear" not in task.build_model(4).hyper


def test_mv_defaults_to_the_linear_model() -> None:
    assert datasets.choose_arch("mv")[0] == "pca"
    assert datasets.choose_arch("raw")[0] == "ae-32-8"
    assert datasets.choose_arch("das")[0] == "ae-32-8"


def test_a_fitted_arch_is_not_federated() -> None:
    task.check_federated_arch("ae-32-8")
    with pytest.raises(ValueError, match="not federated"):
        task.check_federated_arch("pca")
    from federation.flower.server_app import Settings

    assert Settings.from_run_config({"arch": "ae-16-4"}).arch == "ae-16-4"
    with pytest.raises(ValueError, match="fitted in closed form"):
        Settings.from_run_config({"arch": "pca"})
