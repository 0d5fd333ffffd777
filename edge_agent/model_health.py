"""Model health per stream and model version, reported with every health heartbeat.

Per health interval, for the windows each model scored:

``score_psi``        population stability index of the scores against the package's
                     training-score quantiles (manifest ``threshold.quantiles``): the bins
                     between consecutive quantile levels expect the levels' shares
                     (0.5, 0.4, 0.09, ...); PSI = sum (obs - exp) * ln(obs / exp). Below 0.1
                     is stable, above 0.25 a shift worth a look. None for detectors without
                     package quantiles (built-in ones).
``saturation_rate``  share of int8 input values clipped to -128/127 (LiteRT models).
``out_of_range_rate`` share of feature rows with at least one feature outside the int8 input
                     range, i.e. outside what the quantizer calibrated on training data.
``fallback_rate``    share of windows scored by the previous model after a fallback.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = 1e-4


@dataclass
class _Acc:
    model_version: str
    windows: int = 0
    rows: int = 0
    values: int = 0
    saturated: int = 0
    out_of_range: int = 0
    fallback_windows: int = 0
    edges: np.ndarray | None = None  # training quantile values (ascending)
    expected: np.ndarray | None = None  # expected share per bin
    counts: np.ndarray | None = None
    has_int8: bool = False


def _bins(quantiles: dict[float, float]) -> tuple[np.ndarray, np.ndarray]:
    levels = sorted(quantiles)
    edges = np.array([quantiles[q] for q in levels], np.float64)
    shares = np.diff(np.concatenate([[0.0], levels, [1.0]]))
    return edges, shares


def psi(counts: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of observed `counts` against `expected` shares."""
    total = counts.sum()
    if total == 0:
        return 0.0
    obs = np.maximum(counts / total, _EPS)
    exp = np.maximum(expected, _EPS)
    return float(np.sum((obs - exp) * np.log(obs / exp)))


class ModelHealth:
    """Accumulates per model version; `take()` returns the interval's figures and resets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acc: dict[str, _Acc] = {}

    def observe(self, det: Any, rows: np.ndarray, scores: np.ndarray, *, fallback: bool) -> None:
        version = str(getattr(det, "version", "unknown"))
        with self._lock:
            acc = self._acc.get(version)
            if acc is None:
                acc = self._acc[version] = _Acc(version)
                quantiles = getattr(det, "threshold_quantiles", None)
                if quantiles:
                    acc.edges, acc.expected = _bins(quantiles)
                    acc.counts = np.zeros(acc.expected.size, np.int64)
            acc.windows += 1
            acc.fallback_windows += int(fallback)
            finite = scores[np.isfinite(scores)]
            if acc.edges is not None and acc.counts is not None:
                idx = np.searchsorted(acc.edges, finite, side="right")
                acc.counts += np.bincount(idx, minlength=acc.counts.size)[:acc.counts.size]
            saturation = getattr(det, "saturation", None)
            if saturation is not None:
                sat_values, sat_rows = saturation(rows)
                acc.has_int8 = True
                acc.saturated += sat_values
                acc.out_of_range += sat_rows
            acc.rows += rows.shape[0]
            acc.values += rows.size

    def take(self) -> list[dict[str, Any]]:
        """One dict per model version that scored since the last call."""
        with self._lock:
            accs, self._acc = self._acc, {}
        return [_report(a) for a in accs.values() if a.windows]


def _report(a: _Acc) -> dict[str, Any]:
    def rate(n: int, d: int) -> float | None:
        return round(n / d, 6) if d else None

    score_psi = None
    if a.counts is not None and a.expected is not None and a.counts.sum():
        v = psi(a.counts, a.expected)
        score_psi = round(v, 4) if math.isfinite(v) else None
    return {"model_version": a.model_version, "windows": a.windows, "rows": a.rows,
            "score_psi": score_psi,
            "saturation_rate": rate(a.saturated, a.values) if a.has_int8 else None,
            "out_of_range_rate": rate(a.out_of_range, a.rows) if a.has_int8 else None,
            "fallback_rate": rate(a.fallback_windows, a.windows)}
