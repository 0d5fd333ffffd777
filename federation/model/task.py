"""Model, training and statistics for the Flower apps and the CLI: no module state.

As in Flower's app templates, the ClientApp (`federation.flower.client_app`) and the ServerApp
(`federation.flower.server_app`) are thin: the work they do is here (`load_data`, `local_update`,
`Evaluator`, `error_scale_setter`) or in `federation.flower.rounds` (the server's round loop).

Every function takes the model or rows it works on; randomness comes from a ``seed``
argument and never touches torch's global generator. Rows are raw (un-normalised) feature
rows, ``(N, D)`` float32; normalisation lives in the model's buffers.

Federated statistics: `feature_stats` / `error_stats` summarise a client's rows so that the
server can `combine_stats` (exact parallel Welford merge) and set normalisation and error
scale without seeing any data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from federation.model.autoencoder import ARCHS, DEFAULT_ARCH, FITTED_ARCHS, AutoEncoder

STD_FLOOR = 1e-3
ERR_FLOOR = 0.02  # error scale floor (normalised units): keeps int8 rounding noise small


def build_model(dim: int, *, arch: str = DEFAULT_ARCH, seed: int = 0, **hyper: Any) -> AutoEncoder:
    """A fresh autoencoder for ``dim``-wide rows (``hyper`` overrides the named arch)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    kwargs = {**ARCHS[arch], **hyper}
    kwargs["hidden"] = tuple(kwargs.get("hidden", ()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoEncoder(dim, **kwargs)


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    """Every state-dict entry (parameters, then normalisation buffers) as numpy arrays.

    `fit` never changes the buffers, so averaging them across clients that received the same
    buffers is the identity.
    """
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: torch.nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays in `get_weights` order; shapes must match."""
    keys = list(model.state_dict())
    if len(weights) != len(keys):
        raise ValueError(f"expected {len(keys)} arrays, got {len(weights)}")
    state = OrderedDict()
    for k, w, cur in zip(keys, weights, model.state_dict().values(), strict=True):
        if tuple(np.shape(w)) != tuple(cur.shape):
            raise ValueError(f"{k}: shape {np.shape(w)} != {tuple(cur.shape)}")
        state[k] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    model.load_state_dict(state, strict=True)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny dense nets run fastest on one intra-op thread (OpenMP barriers cost more than
    they save, and far more when the other core is busy); restores the setting after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _tensor(rows: np.ndarray, dim: int) -> torch.Tensor:
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"rows must be (N, {dim}), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("rows hold non-finite values")
    return torch.from_numpy(np.ascontiguousarray(x))


def fit(
    model: AutoEncoder,
    rows: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    proximal_mu: float = 0.0,
    global_weights: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, float]:
    """Train on normal rows (MSE in normalised units, Adam).

    With ``proximal_mu > 0`` and ``global_weights`` (in `get_weights` order) the FedProx term
    ``mu/2 * ||w - w_global||^2`` is added. ``progress`` is an optional callable receiving
    ``(epoch, loss)``. Returns ``{"loss": mean loss of the last epoch, "n": rows}``.
    """
    x = _tensor(rows, model.dim)
    n = x.shape[0]
    if n == 0:
        return {"loss": float("nan"), "n": 0}
    gen = torch.Generator().manual_seed(seed)
    prox: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    if proximal_mu > 0 and global_weights is not None:
        ref = dict(zip(model.state_dict(), global_weights, strict=True))
        prox = [(p, torch.as_tensor(np.asarray(ref[k], np.float32)))
                for k, p in model.named_parameters()]
    with one_thread():
        return _fit(model, x, epochs=epochs, lr=lr, batch_size=batch_size, gen=gen, prox=prox,
                    proximal_mu=proximal_mu, progress=progress)


def _fit(model: AutoEncoder, x: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
         gen: torch.Generator, prox: list, proximal_mu: float, progress: Any) -> dict[str, float]:
    n = x.shape[0]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    z_all = model.normalize(x).detach()
    loss_mean = float("nan")
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            z = z_all[perm[i:i + batch_size]]
            inp = z + model.noise * torch.randn(z.shape, generator=gen) if model.noise else z
            loss = torch.mean((model.core(inp) - z) ** 2)
            total += float(loss.detach()) * z.shape[0]
            if prox:
                loss = loss + proximal_mu / 2 * sum(((p - g) ** 2).sum() for p, g in prox)
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss_mean = total / n
        if progress is not None:
            progress(epoch, loss_mean)
    model.eval()
    return {"loss": loss_mean, "n": int(n)}


@torch.no_grad()
def score_rows(model: AutoEncoder, rows: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
    """Float reference scores (same formula as the int8 detector)."""
    model.eval()
    x = _tensor(rows, model.dim)
    if x.shape[0] == 0:
        return np.empty(0, np.float32)
    with one_thread():
        return torch.cat([model.score(x[i:i + batch_size])
                          for i in range(0, x.shape[0], batch_size)]).numpy().astype(np.float32)


@torch.no_grad()
def evaluate(model: AutoEncoder, rows: np.ndarray) -> dict[str, float]:
    """``{"loss": reconstruction MSE (normalised), "n", "score_mean", "score_p99"}``."""
    model.eval()
    x = _tensor(rows, model.dim)
    if x.shape[0] == 0:
        return {"loss": float("nan"), "n": 0, "score_mean": float("nan"),
                "score_p99": float("nan")}
    z = model.normalize(x)
    loss = float(torch.mean((model.core(z) - z) ** 2))
    s = score_rows(model, rows)
    return {"loss": loss, "n": int(x.shape[0]), "score_mean": float(s.mean()),
            "score_p99": float(np.quantile(s, 0.99))}


def feature_stats(rows: np.ndarray) -> dict[str, Any]:
    """Per-feature ``count``, ``mean``, ``m2`` (sum of squared deviations), ``min``, ``max``."""
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rows must be 2-D, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        z = [0.0] * x.shape[1]
        return {"count": 0, "mean": z, "m2": z, "min": z, "max": z}
    mean = x.mean(axis=0)
    return {"count": int(n), "mean": mean.tolist(), "m2": ((x - mean) ** 2).sum(0).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist()}


def combine_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge `feature_stats` results exactly (Chan et al. parallel variance)."""
    live = [s for s in stats if s["count"] > 0]
    if not live:
        raise ValueError("no rows in any of the statistics")
    n, mean, m2 = 0, np.zeros(len(live[0]["mean"])), np.zeros(len(live[0]["mean"]))
    lo, hi = np.full_like(mean, math.inf), np.full_like(mean, -math.inf)
    for s in live:
        nb, mb, m2b = s["count"], np.asarray(s["mean"]), np.asarray(s["m2"])
        delta = mb - mean
        tot = n + nb
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n * nb / tot
        n = tot
        lo, hi = np.minimum(lo, s["min"]), np.maximum(hi, s["max"])
    return {"count": n, "mean": mean.tolist(), "m2": m2.tolist(), "min": lo.tolist(),
            "max": hi.tolist()}


def stats_mean_std(stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` from `feature_stats`/`combine_stats` (population std)."""
    n = max(int(stats["count"]), 1)
    return (np.asarray(stats["mean"], np.float32),
            np.sqrt(np.asarray(stats["m2"], np.float64) / n).astype(np.float32))


def set_normalization(model: AutoEncoder, mean: np.ndarray, std: np.ndarray) -> None:
    """Set the input normalisation (std floored at `STD_FLOOR`)."""
    model.mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
    model.std.copy_(torch.as_tensor(np.maximum(np.asarray(std, np.float32), STD_FLOOR)))


@torch.no_grad()
def error_stats(model: AutoEncoder, rows: np.ndarray) -> dict[str, Any]:
    """Per-feature ``count`` and ``sq_sum`` of the normalised residual (federated)."""
    z = model.normalize(_tensor(rows, model.dim))
    r = (z - model.core(z)).double()
    return {"count": int(z.shape[0]), "sq_sum": (r * r).sum(0).tolist()}


def error_scale_from_stats(stats: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per-feature RMS residual from `error_stats` of one or more clients, floored."""
    n = sum(s["count"] for s in stats)
    if n == 0:
        raise ValueError("no rows in any of the error statistics")
    rms = np.sqrt(np.sum([s["sq_sum"] for s in stats], axis=0) / n)
    return np.maximum(rms, max(ERR_FLOOR, 0.25 * float(np.median(rms)))).astype(np.float32)


def error_scale(model: AutoEncoder, rows: np.ndarray) -> np.ndarray:
    """Per-feature RMS reconstruction error on (normal) rows, floored; see `set_error_scale`."""
    return error_scale_from_stats([error_stats(model, rows)])


def set_error_scale(model: AutoEncoder, scale: np.ndarray) -> None:
    model.err_scale.copy_(torch.as_tensor(np.asarray(scale, np.float32)))


def robust_center_scale(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and robust scale: IQR / 1.349 (the std of a normal), raised to
    half the std where the IQR is degenerate (a quantised or mostly constant column)."""
    x = np.asarray(rows, np.float64)
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    scale = np.maximum((q3 - q1) / 1.349, 0.5 * x.std(axis=0))
    scale = np.maximum(scale, 1e-6 * np.abs(med))
    return med.astype(np.float32), scale.astype(np.float32)


def prepare_and_fit(
    rows: np.ndarray, *, arch: str = DEFAULT_ARCH, epochs: int = 30, lr: float = 3e-3,
    batch_size: int = 256, seed: int = 0, progress: Any = None, robust: bool = False,
    **hyper: Any,
) -> tuple[AutoEncoder, dict[str, float]]:
    """Centralised training in one call: normalise (``robust``: `robust_center_scale`,
    else mean/std), fit, set the error scale."""
    model = build_model(rows.shape[1], arch=arch, seed=seed, **hyper)
    set_normalization(model, *(robust_center_scale(rows) if robust
                               else stats_mean_std(feature_stats(rows))))
    summary = fit(model, rows, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  progress=progress)
    set_error_scale(model, error_scale(model, rows))
    return model, summary


#: the linear model keeps the principal directions explaining this much of the variance
LINEAR_VARIANCE = 0.9
#: weight of Hotelling's T^2 against the SPE in the linear model's score (1: equal means)
LINEAR_T2_WEIGHT = 1.0


def _principal(z: np.ndarray, variance: float, columns: int = 0,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, P (D, k), eigenvalues (k,))`` of the rows ``z``: the fewest directions that
    explain ``variance`` of the variance, and with lagged rows of ``columns`` columns (D a
    multiple of it) at least one per column; at least 1 and at most D - 1 (a residual
    stays). The lags of a slow column are nearly collinear: on a few strongly coupled
    columns the variance share alone keeps one direction and leaves each column's
    dynamics in the residual, where they hide a broken relation between columns."""
    mu = z.mean(axis=0)
    _, sv, vt = np.linalg.svd(z - mu, full_matrices=False)
    lam = sv**2 / max(1, len(z) - 1)
    share = np.cumsum(lam) / max(float(lam.sum()), 1e-12)
    k = int(np.searchsorted(share, variance - 1e-9) + 1)
    if 0 < columns < z.shape[1]:
        k = max(k, min(columns, z.shape[1] - columns))
    k = max(1, min(k, z.shape[1] - 1 if z.shape[1] > 1 else 1, len(lam)))
    return mu, vt[:k].T, np.maximum(lam[:k], 1e-9)


@torch.no_grad()
def fit_linear(rows: np.ndarray, *, variance: float | None = None,
               t2_weight: float | None = None, robust: bool = True, columns: int = 0,
               ) -> tuple[AutoEncoder, dict[str, float]]:
    """The ``pca`` arch fitted in closed form: a linear autoencoder whose residual is
    Hotelling's T^2 plus the SPE (Q statistic) of a PCA of the normalised rows.

    With P the top-k principal directions (eigenvalues lambda) and z the normalised row,
    the encoder is ``Lambda^-1/2 P^T (z - mu)`` (whitened scores: one int8 scale fits every
    latent unit) and the decoder ``mu + P diag(sqrt(lambda) - sqrt(c)) s``. The residual
    ``z - recon`` is then ``(I - P P^T)(z - mu) + sqrt(c) P Lambda^-1/2 P^T (z - mu)``, whose
    squared norm is ``SPE + c T^2`` exactly (the two parts are orthogonal); ``c`` weighs T^2
    so that both terms have the same mean on the training rows (times ``t2_weight``; 0 =
    SPE only); k: `_principal` (``columns``: the input columns of lagged rows). The error
    scale is one number: a training row scores about 1. The score's
    per-feature terms, summed per column, stay the column contributions.
    """
    variance = LINEAR_VARIANCE if variance is None else variance
    t2_weight = LINEAR_T2_WEIGHT if t2_weight is None else t2_weight
    x = _tensor(rows, np.shape(rows)[1]).numpy()
    model = AutoEncoder(x.shape[1], hidden=(), latent=1, linear=True)
    set_normalization(model, *(robust_center_scale(x) if robust
                               else stats_mean_std(feature_stats(x))))
    z = model.normalize(torch.from_numpy(x)).double().numpy()
    mu, p, lam = _principal(z, variance, columns)
    k = p.shape[1]
    proj = (z - mu) @ p
    spe = (((z - mu) - proj @ p.T) ** 2).sum(axis=1)
    c = t2_weight * max(float(spe.mean()), 1e-6) / k
    model = _linear_model(model, mu, p, lam, c)
    r2 = spe + c * ((proj**2) / lam).sum(axis=1)
    set_error_scale(model, np.full(x.shape[1], max(ERR_FLOOR, math.sqrt(
        float(r2.mean()) / x.shape[1])), np.float32))
    return model, {"loss": float(r2.mean() / x.shape[1]), "n": int(len(x)), "latent": k,
                   "explained_variance": float(variance), "t2_weight": float(t2_weight)}


def _linear_model(norm: AutoEncoder, mu: np.ndarray, p: np.ndarray, lam: np.ndarray,
                  c: float) -> AutoEncoder:
    """A ``pca`` AutoEncoder of latent width k with ``norm``'s normalisation and the
    weights of `fit_linear`."""
    model = AutoEncoder(norm.dim, hidden=(), latent=p.shape[1], linear=True)
    model.mean.copy_(norm.mean)
    model.std.copy_(norm.std)
    enc, dec = model.core[0], model.core[1]
    assert isinstance(enc, torch.nn.Linear) and isinstance(dec, torch.nn.Linear)
    w1 = p.T / np.sqrt(lam)[:, None]
    enc.weight.copy_(torch.as_tensor(w1, dtype=torch.float32))
    enc.bias.copy_(torch.as_tensor(-(w1 @ mu), dtype=torch.float32))
    dec.weight.copy_(torch.as_tensor(p * (np.sqrt(lam) - math.sqrt(c)), dtype=torch.float32))
    dec.bias.copy_(torch.as_tensor(mu, dtype=torch.float32))
    model.eval()
    return model


def check_federated_arch(arch: str) -> None:
    """ValueError for an arch fitted in closed form (`FITTED_ARCHS`): Flower rounds
    average gradient-trained weights; a ``pca`` model is fitted per site by `model train`."""
    if arch in FITTED_ARCHS:
        raise ValueError(f"arch {arch!r} is fitted in closed form on one site's rows "
                         "(fiberwatch model train --arch pca), not federated: averaging "
                         "principal directions across sites is not meaningful; federate an "
                         f"autoencoder ({', '.join(a for a in ARCHS if a not in FITTED_ARCHS)})")


# --- the ClientApp's work (as in Flower's templates: load the data, train, test) -----------

#: every HOLDOUT_EVERY-th row of a gateway's buffer is held out for evaluation
HOLDOUT_EVERY = 5


def read_normal(path: str, *, max_rows: int,
                exclude: Sequence[tuple[int, int, int, int]] = ()) -> tuple[np.ndarray, int]:
    """The most recent ``max_rows`` of a gateway's normal-window buffer
    (`edge_agent.normal_buffer`) but those inside an ``exclude`` range ``(start_ns, end_ns,
    ch_start, ch_end)`` (labelled anomalies and maintenance:
    `edge_agent.labels.LabelBook.exclusions`); ``(rows, rows dropped)``."""
    from edge_agent.normal_buffer import NormalBuffer

    if not path:
        raise ValueError("node config has no 'normal-buffer' (path of the gateway's buffer)")
    buf = NormalBuffer.open_readonly(Path(path))
    try:
        rows, origin = buf.read_origin(max_rows)
    finally:
        buf.close()
    drop = np.zeros(len(rows), bool)
    for s, e, c0, c1 in exclude:
        drop |= ((origin["t_ns"] >= s) & (origin["t_ns"] < e) & (origin["channel"] >= c0)
                 & (origin["channel"] <= c1))
    return rows[~drop], int(drop.sum())


def split_held(rows: np.ndarray, *, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows: every `HOLDOUT_EVERY`-th); ValueError below ``min_rows``."""
    if len(rows) < min_rows:
        raise ValueError(f"{len(rows)} normal rows in the buffer, need at least {min_rows}")
    held = np.arange(len(rows)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return rows[~held], rows[held]


def load_data(path: str, *, max_rows: int, min_rows: int,
              exclude: Sequence[tuple[int, int, int, int]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of `read_normal`; ValueError below ``min_rows``."""
    return split_held(read_normal(path, max_rows=max_rows, exclude=exclude)[0],
                      min_rows=min_rows)


@dataclasses.dataclass
class LocalUpdate:
    """One round's local training: the weight delta, the fit summary (`fit`) and the
    received model's held-out evaluation (`evaluate`)."""

    delta: list[np.ndarray]
    fitted: dict[str, float]
    before: dict[str, float]
    rows: int


def local_update(model: AutoEncoder, rows: np.ndarray, held: np.ndarray, *, epochs: int,
                 lr: float, batch_size: int, proximal_mu: float = 0.0,
                 local_fraction: float = 1.0, seed: int = 0) -> LocalUpdate:
    """Evaluate the received model on ``held``, train it on (a ``local_fraction`` of)
    ``rows`` with the FedProx term towards the received weights; the delta."""
    start = get_weights(model)
    before = evaluate(model, held)
    if 0 < local_fraction < 1:  # less local work per round: less client drift on non-IID data
        n = max(1, int(local_fraction * len(rows)))
        rows = rows[np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])]
    fitted = fit(model, rows, epochs=epochs, lr=lr, batch_size=batch_size,
                 proximal_mu=proximal_mu, global_weights=start, seed=seed)
    delta = [b - a for a, b in zip(start, get_weights(model), strict=True)]
    return LocalUpdate(delta, fitted, before, len(rows))


# --- the ServerApp's work: scoring a global model, setting its error scale ------------------


class Arrays(Protocol):
    """What the ServerApp hands around (Flower's ``ArrayRecord``)."""

    def to_numpy_ndarrays(self) -> list[np.ndarray]: ...


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class Evaluator:
    """AUC of a weights list on the server's public evaluation set (simulator-made)."""

    def __init__(self, path: str, dim: int, arch: str) -> None:
        with np.load(path) as z:
            self.rows, self.labels = z["rows"].astype(np.float32), z["labels"].astype(bool)
        self.dim, self.arch = dim, arch

    def auc(self, arrays: Arrays) -> float:
        model = build_model(self.dim, arch=self.arch)
        set_weights(model, arrays.to_numpy_ndarrays())
        return roc_auc(score_rows(model, self.rows), self.labels)


def error_scale_setter(dim: int, arch: str) -> Callable[[Arrays, np.ndarray], Any]:
    """`federation.flower.rounds.calibrate`'s ``set_error_scale``: the arrays with the model's
    error scale set to ``scale`` (a new ``ArrayRecord``)."""
    from flwr.app import ArrayRecord

    def apply(arrays: Arrays, scale: np.ndarray) -> ArrayRecord:
        model = build_model(dim, arch=arch)
        set_weights(model, arrays.to_numpy_ndarrays())
        set_error_scale(model, scale)
        return ArrayRecord(get_weights(model))
    return apply
