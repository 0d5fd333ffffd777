"""Peer detectors for the evaluation: same feature rows, same `Detector` contract.

Each is fitted once on the same normal training rows as the autoencoder and then frozen
(``score`` is pure), so events are formed for all of them by the same pipeline, thresholds
and event builder (`federation.model.evaluate`).

* ``iforest``: scikit-learn `IsolationForest` (200 trees, 256 samples each); score =
  ``-score_samples`` (higher = more anomalous).
* ``hst``: river `HalfSpaceTrees` (25 trees, height 10, window 250) on rows min-max scaled
  to the training range; trained on up to 20,000 rows with ``learn_one``.
* ``robust_z``: per-feature median and MAD of the training rows; score = mean over features
  of the squared robust z-score (the autoencoder's aggregation, without the network).

`FloatReference` puts the float torch model behind the same contract (int8 parity at
event level); `training_rows` recovers a package's training rows for the peers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.features import FeatureSpec

PEERS = ("iforest", "hst", "robust_z")


class _Peer:
    package_hash = ""

    def __init__(self, name: str, spec: FeatureSpec) -> None:
        self.version = f"peer-{name}"
        self.feature_spec_hash = spec.hash
        self.dim = spec.dim


class IsolationForestDetector(_Peer):
    def __init__(self, rows: np.ndarray, spec: FeatureSpec, *, seed: int = 0) -> None:
        from sklearn.ensemble import IsolationForest

        super().__init__("iforest", spec)
        self._m = IsolationForest(n_estimators=200, max_samples=256, random_state=seed,
                                  n_jobs=1).fit(rows)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return (-self._m.score_samples(np.asarray(rows, np.float32))).astype(np.float32)


class HalfSpaceTreesDetector(_Peer):
    def __init__(self, rows: np.ndarray, spec: FeatureSpec, *, seed: int = 0,
                 max_rows: int = 20_000) -> None:
        from river.anomaly import HalfSpaceTrees

        super().__init__("hst", spec)
        self._lo = rows.min(axis=0).astype(np.float64)
        span = rows.max(axis=0).astype(np.float64) - self._lo
        self._inv = 1.0 / np.where(span > 0, span, 1.0)
        self._m = HalfSpaceTrees(n_trees=25, height=10, window_size=250, seed=seed)
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(rows))[:max_rows]
        for x in self._scaled(rows[pick]):
            self._m.learn_one(x)

    def _scaled(self, rows: np.ndarray) -> list[dict[int, float]]:
        z = np.clip((np.asarray(rows, np.float64) - self._lo) * self._inv, 0.0, 1.0)
        return [dict(enumerate(r)) for r in z.tolist()]

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.fromiter((self._m.score_one(x) for x in self._scaled(rows)), np.float32,
                           count=len(rows))


class RobustZScoreDetector(_Peer):
    def __init__(self, rows: np.ndarray, spec: FeatureSpec) -> None:
        super().__init__("robust_z", spec)
        self._med = np.median(rows, axis=0).astype(np.float32)
        mad = 1.4826 * np.median(np.abs(rows - self._med), axis=0)
        self._inv = (1.0 / np.maximum(mad, 1e-6)).astype(np.float32)

    def score(self, rows: np.ndarray) -> np.ndarray:
        z = (np.asarray(rows, np.float32) - self._med) * self._inv
        return np.mean(z * z, axis=1).astype(np.float32)


def build(name: str, rows: np.ndarray, spec: FeatureSpec, *, seed: int = 0) -> _Peer:
    """A fitted peer by name (`PEERS`)."""
    if name == "iforest":
        return IsolationForestDetector(rows, spec, seed=seed)
    if name == "hst":
        return HalfSpaceTreesDetector(rows, spec, seed=seed)
    if name == "robust_z":
        return RobustZScoreDetector(rows, spec)
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


def training_rows(pkg: Any, train_checkpoint: Any) -> np.ndarray:
    """The autoencoder's training rows: from a checkpoint, or regenerated from the
    package's recorded simulator source (deterministic)."""
    if train_checkpoint is not None:
        from federation.model.train import load_checkpoint

        rows = load_checkpoint(train_checkpoint)["rows"]
        if rows is None:
            raise ValueError(f"{train_checkpoint}: holds no training rows")
        return rows
    src = pkg.manifest.get("training", {}).get("source", {})
    if src.get("kind") != "sim":
        raise ValueError("the package was not trained on simulator data: pass the training "
                         "checkpoint (--train-rows) so the peers train on the same rows")
    from edge_agent.features import FeatureSpec
    from federation.model.train import sim_training_rows

    kw = {k: src[k] for k in ("stream", "channels", "seconds", "runs", "seed", "geometry")}
    return sim_training_rows(spec=FeatureSpec.from_dict(pkg.manifest["feature_spec"]), **kw)[0]


class FloatReference:
    """The float torch model behind the `Detector` contract (int8 parity runs)."""

    package_hash = ""

    def __init__(self, model: Any, spec: Any, name: str = "float") -> None:
        self.model, self.version, self.feature_spec_hash = model, name, spec.hash

    def score(self, rows: np.ndarray) -> np.ndarray:
        from federation.model import task

        x = np.asarray(rows, np.float32)
        out = np.full(len(x), np.nan, np.float32)
        ok = np.isfinite(x).all(axis=1)
        out[ok] = task.score_rows(self.model, x[ok])
        return out
