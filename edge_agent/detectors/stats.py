"""Statistical detectors: the built-in models until (and besides) the int8 network.

`RobustZDetector`
    Robust z-score of every feature against its median over recent normal rows, scaled by
    the larger of the MAD and the 1-99 % range (both as Gaussian sigmas); the score is the
    root mean square of the (clipped) z-scores. The range term matters: several DAS
    features (spatial-context ones above all) are heavy-tailed, their MAD is tiny, and
    with the MAD alone one such feature in a normal window scored like a leak.
`MahalanobisDetector`
    Mahalanobis distance to the mean of recent normal rows under a shrunk covariance,
    divided by sqrt(dim).

Both keep a ring of rows passed to `learn` (the pipeline passes only rows of unflagged
groups) and refit their statistics every ``refit_every`` calls (the first call fits at
once). `score` is pure. Until the first `learn` they score against zero mean, unit scale,
and `ready` is False (the pipeline does not calibrate thresholds on such scores).
"""

from __future__ import annotations

import numpy as np

_MAD_TO_SIGMA = 1.4826
_Q98_TO_SIGMA = 1 / 4.653  # (q99 - q01) of a Gaussian is 4.653 sigma


class _RowRing:
    """The last `capacity` rows passed to `learn`, and the refit cadence."""

    def __init__(self, dim: int, capacity: int, refit_every: int, seed: int) -> None:
        if dim < 1 or capacity < 2:
            raise ValueError("dim must be >= 1 and history_rows >= 2")
        self.dim = dim
        self.capacity = capacity
        self.refit_every = refit_every
        self.seed = seed
        self._rows = np.zeros((capacity, dim), dtype=np.float32)
        self._n = 0
        self._pos = 0
        self._calls = 0
        self._rng = np.random.default_rng(seed)
        self.n_learned = 0

    def add(self, rows: np.ndarray) -> bool:
        """Store rows (a random subset if more than capacity); True when a refit is due."""
        rows = _check(rows, self.dim)
        if rows.shape[0] > self.capacity:
            rows = rows[self._rng.choice(rows.shape[0], self.capacity, replace=False)]
        idx = (self._pos + np.arange(rows.shape[0])) % self.capacity
        self._rows[idx] = rows
        self._pos = int((self._pos + rows.shape[0]) % self.capacity)
        self._n = min(self._n + rows.shape[0], self.capacity)
        self.n_learned += rows.shape[0]
        self._calls += 1
        return rows.shape[0] > 0 and (self._calls == 1 or self._calls % self.refit_every == 0)

    def rows(self) -> np.ndarray:
        return self._rows[: self._n]


def _check(rows: np.ndarray, dim: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ValueError(f"rows must be (N, {dim}), got shape {rows.shape}")
    return rows


def _rms(z: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(z * z, axis=1)).astype(np.float32)


class _RingDetector:
    """What both detectors share: their settings and the ring of learned rows."""

    package_hash = ""

    def __init__(self, dim: int, history_rows: int, refit_every: int, feature_spec_hash: str,
                 seed: int) -> None:
        self.dim = dim
        self.history_rows = history_rows
        self.refit_every = refit_every
        self.feature_spec_hash = feature_spec_hash
        self.seed = seed
        self._ring = _RowRing(dim, history_rows, refit_every, seed)


class RobustZDetector(_RingDetector):
    """Robust z-score detector (median and tail-aware robust scale per feature).

    Parameters
    ----------
    dim : int
        Feature row width (`FeatureSpec.dim`).
    history_rows : int
        Rows kept for the median/MAD.
    refit_every : int
        `learn` calls between refits.
    clip : float
        z-scores are clipped to this magnitude before aggregation.
    min_scale : float
        Floor of the robust scale (constant features do not explode).
    feature_spec_hash : str
        The spec the rows follow ("" = any spec of width `dim`).
    seed : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> d = RobustZDetector(3)
    >>> d.learn(rng.normal(size=(500, 3)).astype(np.float32))
    >>> s = d.score(np.array([[0, 0, 0], [8, 8, 8]], np.float32))
    >>> bool(s[0] < 1 < 5 < s[1])
    True
    """

    version = "stat-robustz-1"

    def __init__(self, dim: int, *, history_rows: int = 8192, refit_every: int = 20,
                 clip: float = 50.0, min_scale: float = 1e-3, feature_spec_hash: str = "",
                 seed: int = 0) -> None:
        super().__init__(dim, history_rows, refit_every, feature_spec_hash, seed)
        self.clip = clip
        self.min_scale = min_scale
        self.center = np.zeros(dim, dtype=np.float32)
        self.inv_scale = np.ones(dim, dtype=np.float32)

    @property
    def ready(self) -> bool:
        return self._ring.n_learned > 0

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(N, dim) float32 rows -> (N,) float32 scores. Pure."""
        z = (_check(rows, self.dim) - self.center) * self.inv_scale
        np.clip(z, -self.clip, self.clip, out=z)
        return _rms(z)

    def learn(self, rows: np.ndarray) -> None:
        """Remember normal rows; refit median and scale when due."""
        if self._ring.add(rows):
            h = self._ring.rows()
            med = np.median(h, axis=0)
            mad = np.median(np.abs(h - med), axis=0) * _MAD_TO_SIGMA
            q01, q99 = np.percentile(h, [1, 99], axis=0)
            scale = np.maximum(np.maximum(mad, (q99 - q01) * _Q98_TO_SIGMA), self.min_scale)
            self.center = med.astype(np.float32)
            self.inv_scale = (1.0 / scale).astype(np.float32)


class MahalanobisDetector(_RingDetector):
    """Mahalanobis distance under a shrunk correlation matrix (features standardised first).

    Parameters
    ----------
    dim : int
    history_rows, refit_every, feature_spec_hash, seed
        As for `RobustZDetector`.
    shrinkage : float
        Weight of the scaled identity in the covariance, in [0, 1].

    Examples
    --------
    >>> d = MahalanobisDetector(3)
    >>> d.ready
    False
    >>> d.learn(np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32))
    >>> low, high = d.score(np.array([[0, 0, 0], [8, 8, 8]], np.float32))
    >>> d.ready and bool(low < 1 < 5 < high)
    True
    """

    version = "stat-mahalanobis-1"

    def __init__(self, dim: int, *, history_rows: int = 8192, refit_every: int = 20,
                 shrinkage: float = 0.1, feature_spec_hash: str = "", seed: int = 0) -> None:
        if not 0 <= shrinkage <= 1:
            raise ValueError("shrinkage must be in [0, 1]")
        super().__init__(dim, history_rows, refit_every, feature_spec_hash, seed)
        self.shrinkage = shrinkage
        self.mean = np.zeros(dim, dtype=np.float32)
        self.whiten = np.eye(dim, dtype=np.float32)

    @property
    def ready(self) -> bool:
        return self._ring.n_learned > 1

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(N, dim) float32 rows -> (N,) float32 scores. Pure."""
        z = (_check(rows, self.dim) - self.mean) @ self.whiten
        return _rms(z)

    def learn(self, rows: np.ndarray) -> None:
        """Remember normal rows; refit mean/covariance when due."""
        if self._ring.add(rows):
            h = self._ring.rows().astype(np.float64)
            if h.shape[0] < 2:
                return
            mean = h.mean(axis=0)
            # shrink the correlation matrix, not the covariance: one wide feature (a power
            # ratio) would otherwise set the identity's scale and hide every narrow one
            sd = np.sqrt(np.maximum(h.var(axis=0), 1e-12))
            corr = np.cov((h - mean) / sd, rowvar=False).reshape(self.dim, self.dim)
            corr = (1 - self.shrinkage) * corr + self.shrinkage * np.eye(self.dim)
            evals, evecs = np.linalg.eigh(corr)
            w = evecs / np.sqrt(np.maximum(evals, 1e-9))
            self.whiten = (w / sd[:, None]).astype(np.float32)
            self.mean = mean.astype(np.float32)
